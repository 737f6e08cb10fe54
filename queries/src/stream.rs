//! The live streams (Server-Sent Events): a match's `snapshot`, then a `delta` per
//! change, then `end`; a leaderboard's top N whenever it changes, with an `overtake`
//! event whenever a player passes another. Every event's SSE `id` is the match version.
//!
//! A client reconnecting with `Last-Event-ID` (header, or `last_event_id` in the query
//! for clients that cannot set headers) gets the retained updates it missed when they
//! follow on from its version, else one fresh `snapshot`: never a gap in state, never a
//! duplicate. A client that falls more than [`RETAINED`](crate::live::RETAINED) updates
//! behind gets one `snapshot` of the latest state instead of what it missed (it misses
//! the intermediate deltas, their kill-feed lines and the overtakes among them).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use match_stats_commands::{MatchId, PlayerId};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use crate::board::top_body;
use crate::error::ApiError;
use crate::leaderboard::{Metric, Ranked};
use crate::live::{Fit, Subscription, Update, summary_json};
use crate::lookup::{ApiState, find};
use crate::params::{LEADERBOARD_LIMIT, Params, limit, match_id, metric, params, path};
use crate::read_model::MatchSnapshot;

/// How often an idle stream sends a comment (keeps proxies from closing it).
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// What `Retry-After` says when the replica has its maximum of stream clients.
pub const FULL_RETRY_AFTER_SECONDS: u32 = 5;

/// The version a reconnecting client holds, from `Last-Event-ID` or `last_event_id`.
fn last_event_id(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Option<u64>, ApiError> {
    let raw = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().unwrap_or("").to_owned()),
        None => params.get("last_event_id").cloned(),
    };
    raw.filter(|r| !r.is_empty())
        .map(|r| {
            r.trim().parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid Last-Event-ID {r:?}: must be a match version (an integer)"
                ))
            })
        })
        .transpose()
}

fn subscribe(state: &ApiState, id: MatchId) -> Result<Subscription, ApiError> {
    state.live.subscribe(id).map_err(|full| {
        metrics::counter!(crate::metrics::STREAMS_REFUSED).increment(1);
        ApiError::retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this replica streams to {} clients already; try again or another replica",
                full.max_clients
            ),
            FULL_RETRY_AFTER_SECONDS,
        )
    })
}

fn sse(events: impl Stream<Item = Event> + Send + 'static) -> Response {
    let stream = events.map(Ok::<_, Infallible>);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, "no-store".parse().expect("valid"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", "no".parse().expect("valid"));
    response
}

fn event(name: &'static str, version: u64, data: &[u8]) -> Event {
    Event::default()
        .event(name)
        .id(version.to_string())
        .data(String::from_utf8_lossy(data))
}

/// The latest state of a match, from the read model or the other tiers.
async fn latest(state: &ApiState, id: &MatchId) -> Option<Arc<MatchSnapshot>> {
    match state.model.get(id) {
        Some(snapshot) if state.model.is_caught_up() => Some(snapshot),
        _ => find(state, id).await.ok(),
    }
}

/// One match stream's client.
struct MatchClient {
    state: Arc<ApiState>,
    id: MatchId,
    subscription: Subscription,
    /// The version the client holds.
    at: u64,
    /// Whether it has been sent `end`.
    ended: bool,
    /// Retained updates still to go through, oldest last.
    backlog: Vec<Arc<Update>>,
}

impl MatchClient {
    fn snapshot(&mut self, snapshot: &MatchSnapshot, out: &mut Vec<Event>) {
        out.push(event("snapshot", snapshot.version, snapshot.body()));
        self.at = snapshot.version;
        if snapshot.is_completed() && !self.ended {
            out.push(event(
                "end",
                snapshot.version,
                &summary_json(&snapshot.summary),
            ));
            self.ended = true;
        }
    }

    async fn take(&mut self, update: &Update, out: &mut Vec<Event>) {
        match update.fit(self.at) {
            Fit::Seen => {}
            Fit::Next => {
                out.push(event("delta", update.to, &update.delta));
                self.at = update.to;
                if let Some(end) = update.end.as_ref().filter(|_| !self.ended) {
                    out.push(event("end", update.to, end));
                    self.ended = true;
                }
            }
            Fit::Gap => self.resnapshot(out).await,
        }
    }

    async fn resnapshot(&mut self, out: &mut Vec<Event>) {
        metrics::counter!(crate::metrics::STREAM_RESNAPSHOTS).increment(1);
        if let Some(snapshot) = latest(&self.state, &self.id).await
            && snapshot.version > self.at
        {
            self.snapshot(&snapshot, out);
        }
    }

    /// The next events to send (`None`: the stream ends).
    async fn next(&mut self) -> Option<Vec<Event>> {
        let mut out = Vec::new();
        while out.is_empty() {
            if let Some(update) = self.backlog.pop() {
                self.take(&update, &mut out).await;
                continue;
            }
            let received = tokio::select! {
                received = self.subscription.receiver.recv() => received,
                _ = self.state.live.closing() => return None,
            };
            match received {
                Ok(update) => self.take(&update, &mut out).await,
                Err(RecvError::Lagged(_)) => self.resnapshot(&mut out).await,
                Err(RecvError::Closed) => return None,
            }
        }
        Some(out)
    }
}

/// `GET /api/v1/match-stats/matches/{matchID}/stream`.
pub async fn match_stream(
    State(state): State<Arc<ApiState>>,
    raw: Result<Path<String>, PathRejection>,
    query: Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = match_id(&path(raw)?)?;
    let last = last_event_id(&headers, &params(query)?)?;
    let found = find(&state, &id).await?;
    let subscription = subscribe(&state, id)?;
    // Read the read model again now that the client is subscribed: an update published
    // between the first read and the subscription went to no channel (none existed
    // yet), and starting from the older snapshot would show it as a gap and send a
    // second snapshot. The read model takes each batch before its updates are
    // published, so this snapshot and the subscription together miss nothing. (Only
    // the read model: updates come from it, and the other tiers cost a round trip.)
    let found = state
        .model
        .get(&id)
        .filter(|newer| newer.version >= found.version)
        .unwrap_or(found);
    metrics::counter!(crate::metrics::STREAMS_OPENED, "stream" => "match").increment(1);
    let mut client = MatchClient {
        state,
        id,
        at: 0,
        ended: false,
        backlog: subscription.retained.iter().rev().cloned().collect(),
        subscription,
    };
    let mut first = Vec::new();
    match last {
        // Retained updates that follow on from the client's version: only those.
        Some(at)
            if at >= found.version || client.backlog.iter().any(|u| u.fit(at) == Fit::Next) =>
        {
            client.at = at;
            // Up to date with a completed match: `end` again (it changes nothing; the
            // client may have missed it).
            if found.is_completed() && at >= found.version {
                first.push(event("end", found.version, &summary_json(&found.summary)));
                client.ended = true;
            }
        }
        _ => client.snapshot(&found, &mut first),
    }
    let events = futures::stream::iter(first).chain(
        futures::stream::unfold(client, |mut client| async move {
            let events = client.next().await?;
            Some((futures::stream::iter(events), client))
        })
        .flatten(),
    );
    Ok(sse(events))
}

/// One player passing another on a leaderboard.
#[derive(Debug, Serialize, PartialEq)]
struct Overtake<'a> {
    match_id: &'a str,
    metric: &'static str,
    /// Who moved up.
    player_id: PlayerId,
    /// Whom they passed.
    passed_player_id: PlayerId,
    old_rank: usize,
    new_rank: usize,
    passed_old_rank: usize,
    passed_new_rank: usize,
}

/// One leaderboard stream's client.
struct BoardClient {
    state: Arc<ApiState>,
    id: MatchId,
    metric: Metric,
    limit: usize,
    subscription: Subscription,
    /// What it was last sent.
    shown: Option<Arc<MatchSnapshot>>,
    top: Vec<(PlayerId, usize, u64)>,
}

/// The top of a board as (player, rank, value bits): what decides whether it changed.
fn top(snapshot: &MatchSnapshot, metric: Metric, limit: usize) -> Vec<(PlayerId, usize, u64)> {
    snapshot
        .ranked(metric)
        .take(limit)
        .map(|r| (r.standing.player_id, r.rank, r.standing.value.to_bits()))
        .collect()
}

/// Who passed whom between two snapshots (from behind or level to strictly ahead), the
/// one who moved being in the new top `limit`.
fn overtakes<'a>(
    before: &MatchSnapshot,
    after: &'a MatchSnapshot,
    metric: Metric,
    limit: usize,
) -> Vec<Overtake<'a>> {
    let old: Vec<Ranked> = before.ranked(metric).collect();
    let old_rank: HashMap<PlayerId, usize> =
        old.iter().map(|r| (r.standing.player_id, r.rank)).collect();
    let new_rank: HashMap<PlayerId, usize> = after
        .ranked(metric)
        .map(|r| (r.standing.player_id, r.rank))
        .collect();
    let mut found = Vec::new();
    for mover in after.ranked(metric).take(limit) {
        let who = mover.standing.player_id;
        let Some(&was) = old_rank.get(&who) else {
            continue;
        };
        // Passing: from behind or level to strictly ahead.
        for passed in old.iter().take_while(|r| r.rank <= was) {
            let whom = passed.standing.player_id;
            if whom != who
                && let Some(&now) = new_rank.get(&whom)
                && mover.rank < now
            {
                found.push(Overtake {
                    match_id: after.summary.match_id.as_str(),
                    metric: metric.as_str(),
                    player_id: who,
                    passed_player_id: whom,
                    old_rank: was,
                    new_rank: mover.rank,
                    passed_old_rank: passed.rank,
                    passed_new_rank: now,
                });
            }
        }
    }
    found
}

impl BoardClient {
    fn show(&mut self, snapshot: Arc<MatchSnapshot>, out: &mut Vec<Event>) {
        if self
            .shown
            .as_ref()
            .is_some_and(|s| s.version >= snapshot.version)
        {
            return;
        }
        let top = top(&snapshot, self.metric, self.limit);
        if let Some(before) = &self.shown {
            for overtake in overtakes(before, &snapshot, self.metric, self.limit) {
                let data = serde_json::to_vec(&overtake).expect("serializes");
                out.push(event("overtake", snapshot.version, &data));
            }
        }
        if self.shown.is_none() || top != self.top {
            let body = top_body(&snapshot, self.metric, self.limit);
            out.push(event("leaderboard", snapshot.version, &body));
            self.top = top;
        }
        self.shown = Some(snapshot);
    }

    async fn next(&mut self) -> Option<Vec<Event>> {
        let mut out = Vec::new();
        while out.is_empty() {
            let received = tokio::select! {
                received = self.subscription.receiver.recv() => received,
                _ = self.state.live.closing() => return None,
            };
            match received {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    if let Some(snapshot) = latest(&self.state, &self.id).await {
                        self.show(snapshot, &mut out);
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
        Some(out)
    }
}

/// `GET /api/v1/match-stats/matches/{matchID}/leaderboard/{metric}/stream?limit=`.
pub async fn leaderboard_stream(
    State(state): State<Arc<ApiState>>,
    raw: Result<Path<(String, String)>, PathRejection>,
    query: Params,
) -> Result<Response, ApiError> {
    let (raw_match, raw_metric) = path(raw)?;
    let id = match_id(&raw_match)?;
    let metric = metric(&raw_metric)?;
    let limit = limit(&params(query)?, LEADERBOARD_LIMIT)?;
    let found = find(&state, &id).await?;
    let subscription = subscribe(&state, id)?;
    metrics::counter!(crate::metrics::STREAMS_OPENED, "stream" => "leaderboard").increment(1);
    let mut client = BoardClient {
        state,
        id,
        metric,
        limit,
        subscription,
        shown: None,
        top: Vec::new(),
    };
    let mut first = Vec::new();
    client.show(found, &mut first);
    let events = futures::stream::iter(first).chain(
        futures::stream::unfold(client, |mut client| async move {
            let events = client.next().await?;
            Some((futures::stream::iter(events), client))
        })
        .flatten(),
    );
    Ok(sse(events))
}
