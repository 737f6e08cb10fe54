//! Live updates for stream clients (Server-Sent Events): the projector hands each
//! watched match's applied deltas to [`Live`] as one [`Update`] per published snapshot;
//! clients of that match receive it through a bounded broadcast channel, and the last
//! [`RETAINED`] updates are kept so that a client reconnecting with `Last-Event-ID`
//! gets exactly what it missed.
//!
//! Only matches someone watches cost anything: a match gets a channel when its first
//! client connects, and loses it [`LINGER`] after its last client left (so a reconnect
//! within that time still finds the retained updates).
//!
//! Memory is bounded per match, not per client: the broadcast channel holds at most
//! [`RETAINED`] updates whatever the number of clients; a client that falls further
//! behind is told so ([`tokio::sync::broadcast::error::RecvError::Lagged`]) and is sent
//! one snapshot of the latest state instead of what it missed.

mod update;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use match_stats_commands::MatchId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

pub use update::{FeedItem, Fit, Pending, Update, summary_json};

/// Updates kept per watched match (for `Last-Event-ID`) and the broadcast channel's
/// capacity (how far a client may fall behind before it gets a snapshot instead).
pub const RETAINED: usize = 64;
/// How long a match keeps its channel after its last client left.
pub const LINGER: Duration = Duration::from_secs(60);

struct Channel {
    sender: broadcast::Sender<Arc<Update>>,
    retained: VecDeque<Arc<Update>>,
    /// When the last client left (`None` while one is connected or none has left yet).
    idle_since: Option<Instant>,
}

/// What a new client starts from.
pub struct Subscription {
    /// Live updates from now on.
    pub receiver: broadcast::Receiver<Arc<Update>>,
    /// The retained updates, oldest first.
    pub retained: Vec<Arc<Update>>,
    /// Held while the client is connected (the per-replica client limit).
    pub permit: OwnedSemaphorePermit,
}

/// Why a client was not subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// The limit.
    pub max_clients: usize,
}

/// The live channels of watched matches, and the per-replica stream client limit.
pub struct Live {
    channels: Mutex<HashMap<MatchId, Channel>>,
    clients: Arc<Semaphore>,
    max_clients: usize,
    /// Set at shutdown: every stream ends.
    closing: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("max_clients", &self.max_clients)
            .field("clients", &self.clients())
            .finish()
    }
}

impl Live {
    /// A hub allowing `max_clients` stream clients at once on this replica.
    pub fn new(max_clients: usize) -> Self {
        metrics::gauge!(crate::metrics::STREAM_CHANNELS).set(0.0);
        metrics::gauge!(crate::metrics::STREAM_CLIENTS).set(0.0);
        Live {
            channels: Mutex::new(HashMap::new()),
            clients: Arc::new(Semaphore::new(max_clients)),
            max_clients,
            closing: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Ends every stream (at shutdown, so that the HTTP server can drain).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Completes once [`Live::close`] was called.
    pub async fn closing(&self) {
        let mut closing = self.closing.subscribe();
        let _ = closing.wait_for(|c| *c).await;
    }

    /// Stream clients connected now.
    pub fn clients(&self) -> usize {
        self.max_clients - self.clients.available_permits()
    }

    /// Sets the clients gauge (before `/metrics` renders).
    pub fn publish_gauges(&self) {
        metrics::gauge!(crate::metrics::STREAM_CLIENTS).set(self.clients() as f64);
    }

    /// Whether a match has a channel (someone watches it, or did within [`LINGER`]).
    pub fn is_watched(&self, id: &MatchId) -> bool {
        self.lock().contains_key(id)
    }

    /// Subscribes a client to a match's updates, or says the replica is full.
    pub fn subscribe(&self, id: MatchId) -> Result<Subscription, Full> {
        let permit = self.clients.clone().try_acquire_owned().map_err(|_| Full {
            max_clients: self.max_clients,
        })?;
        let mut channels = self.lock();
        let watched = channels.len() + usize::from(!channels.contains_key(&id));
        metrics::gauge!(crate::metrics::STREAM_CHANNELS).set(watched as f64);
        let channel = channels.entry(id).or_insert_with(|| Channel {
            sender: broadcast::channel(RETAINED).0,
            retained: VecDeque::with_capacity(RETAINED),
            idle_since: None,
        });
        channel.idle_since = None;
        Ok(Subscription {
            receiver: channel.sender.subscribe(),
            retained: channel.retained.iter().cloned().collect(),
            permit,
        })
    }

    /// Hands an update to a watched match's clients (nothing when nobody watches), and
    /// drops channels idle for longer than [`LINGER`].
    pub fn publish(&self, update: Update) {
        let mut channels = self.lock();
        let id = update.match_id;
        if let Some(channel) = channels.get_mut(&id) {
            let update = Arc::new(update);
            if channel.retained.len() == RETAINED {
                channel.retained.pop_front();
            }
            channel.retained.push_back(update.clone());
            let _ = channel.sender.send(update);
        }
        let now = Instant::now();
        channels.retain(|_, channel| {
            if channel.sender.receiver_count() > 0 {
                channel.idle_since = None;
                return true;
            }
            let since = *channel.idle_since.get_or_insert(now);
            now.duration_since(since) < LINGER
        });
        metrics::gauge!(crate::metrics::STREAM_CHANNELS).set(channels.len() as f64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MatchId, Channel>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}
