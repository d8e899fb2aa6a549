//! The controller's half of `paas ssh` (issue 21): the rendezvous of a client's WebSocket and the
//! node's dial-back. The agent never listens, so a session waits here ([`SshHub::offer`]) until
//! the instance's node long-polls it (`GET /v1/agent/sessions`) and dials
//! `GET /v1/agent/ssh/{id}`; that socket is handed to the client's handler, which splices the
//! two. The client's socket waits in this process; with several controllers the offer also goes
//! through the database (`ssh_offers`), so the controller the node long-polls hands it over, and
//! it names this controller's URL to dial back (`advertise_url`). Wire protocol:
//! `paas_common::ssh`.

use paas_common::ssh::SessionOffer;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// A message from the node's socket, made `Send` (actix's stream is not), for the client's
/// handler on whatever worker thread it runs.
#[derive(Debug)]
pub enum FromNode {
    Binary(bytes::Bytes),
    Text(String),
}

/// The node's side of a session once it dialed back: its socket to write to and what it sent.
pub struct NodeLeg {
    pub session: actix_ws::Session,
    pub rx: mpsc::Receiver<FromNode>,
}

struct Pending {
    node: String,
    offer: SessionOffer,
    /// Already handed to the node's long-poll: not offered twice.
    offered: bool,
    tx: oneshot::Sender<NodeLeg>,
    created: Instant,
}

#[derive(Default)]
pub struct SshHub {
    pending: Mutex<HashMap<String, Pending>>,
    /// Bumped on every new offer; the nodes' long-polls wait on it.
    version: watch::Sender<u64>,
}

impl SshHub {
    /// Records a session for `node`; the receiver yields the node's leg once it dialed back.
    pub fn offer(&self, node: &str, offer: SessionOffer) -> oneshot::Receiver<NodeLeg> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            // Sessions nobody took up are dropped here, so the map cannot grow without bound.
            p.retain(|_, s| s.created.elapsed() < Duration::from_secs(60) && !s.tx.is_closed());
            p.insert(
                offer.session_id.clone(),
                Pending {
                    node: node.to_string(),
                    offer,
                    offered: false,
                    tx,
                    created: Instant::now(),
                },
            );
        }
        self.version.send_modify(|v| *v += 1);
        rx
    }

    /// Woken on every new offer of this controller.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Forgets a session (the client gave up or it timed out).
    pub fn cancel(&self, session_id: &str) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(session_id);
        }
    }

    /// The sessions waiting for `node` not yet handed out, marked as handed out.
    fn take_offers(&self, node: &str) -> Vec<SessionOffer> {
        let Ok(mut p) = self.pending.lock() else {
            return Vec::new();
        };
        p.values_mut()
            .filter(|s| s.node == node && !s.offered && !s.tx.is_closed())
            .map(|s| {
                s.offered = true;
                s.offer.clone()
            })
            .collect()
    }

    /// Long-poll: the offers for `node`, waiting up to `hold` for one to come.
    pub async fn wait_offers(
        &self,
        node: &str,
        hold: Duration,
        stopping: &tokio_util::sync::CancellationToken,
    ) -> Vec<SessionOffer> {
        let mut rx = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            rx.borrow_and_update();
            let offers = self.take_offers(node);
            if !offers.is_empty() {
                return offers;
            }
            tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.changed()) => {
                    if !matches!(r, Ok(Ok(()))) {
                        return Vec::new();
                    }
                }
                () = stopping.cancelled() => return Vec::new(),
            }
        }
    }

    /// The pending session `id` of `node`, removed: its sender for the node's leg.
    pub fn claim(&self, node: &str, id: &str) -> Option<oneshot::Sender<NodeLeg>> {
        let mut p = self.pending.lock().ok()?;
        if p.get(id).is_some_and(|s| s.node == node) {
            p.remove(id).map(|s| s.tx)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str) -> SessionOffer {
        SessionOffer {
            session_id: id.into(),
            instance_id: "i-1".into(),
            dial: None,
            command: None,
            tty: false,
            cols: None,
            rows: None,
        }
    }

    #[tokio::test]
    async fn an_offer_goes_once_to_its_node_only() {
        let hub = SshHub::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let hold = Duration::from_millis(50);
        let _rx = hub.offer("n1", offer("s1"));
        assert!(hub.wait_offers("n2", hold, &stop).await.is_empty());
        let got = hub.wait_offers("n1", hold, &stop).await;
        assert_eq!(got, vec![offer("s1")]);
        assert!(
            hub.wait_offers("n1", hold, &stop).await.is_empty(),
            "handed out once"
        );
        assert!(
            hub.claim("n2", "s1").is_none(),
            "another node cannot claim it"
        );
        assert!(hub.claim("n1", "s1").is_some());
        assert!(hub.claim("n1", "s1").is_none(), "claimed once");
    }

    #[tokio::test]
    async fn a_waiting_node_is_woken_by_a_new_offer() {
        let hub = std::sync::Arc::new(SshHub::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let waiter = {
            let hub = hub.clone();
            let stop = stop.clone();
            tokio::spawn(async move { hub.wait_offers("n1", Duration::from_secs(20), &stop).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _rx = hub.offer("n1", offer("s2"));
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken at once")
            .unwrap();
        assert_eq!(got, vec![offer("s2")]);
    }

    #[tokio::test]
    async fn a_cancelled_or_abandoned_session_is_not_offered() {
        let hub = SshHub::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let hold = Duration::from_millis(20);
        let _rx = hub.offer("n1", offer("s3"));
        hub.cancel("s3");
        drop(hub.offer("n1", offer("s4")));
        assert!(hub.wait_offers("n1", hold, &stop).await.is_empty());
    }
}
