//! A TCP relay on a free loopback port in front of a server, which drops every connection
//! it carries at once when told to ([`Relay::cut`]): a network fault, with whatever was in
//! flight lost. Clients reconnect through it. Stopped on drop.

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// See the module.
pub struct Relay {
    port: u16,
    cuts: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Relays connections to `127.0.0.1:to`.
    pub async fn start(to: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay port");
        let port = listener.local_addr().expect("relay address").port();
        let (cuts, watching) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watching.clone();
                // Only cuts from now on end this connection.
                cut.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", to)).await else {
                        return;
                    };
                    // Either way both sockets close here, dropped.
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { port, cuts, task }
    }

    /// A NATS URL through the relay.
    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Drops every connection the relay carries now.
    pub fn cut(&self) {
        self.cutter().cut();
    }

    /// A handle that cuts this relay's connections from another task.
    pub fn cutter(&self) -> Cutter {
        Cutter(self.cuts.clone())
    }
}

/// See [`Relay::cutter`].
pub struct Cutter(watch::Sender<u64>);

impl Cutter {
    /// See [`Relay::cut`].
    pub fn cut(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
