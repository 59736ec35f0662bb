//! One login per id across the cluster: claims in a JetStream key-value bucket, decided by
//! `create` (exactly one of racing claims succeeds) and changed hands by compare-and-set on a
//! key's revision.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_nats::{Client, Request, RequestErrorKind};
use bytes::Bytes;
use kim_core::cluster::{Claim, ClusterError};
use kim_core::{ChannelId, DuplicatePolicy};

use crate::error::NatsError;
use crate::metrics::{ClaimOutcome, Failure};
use crate::options::NatsOptions;
use crate::subject::{user_key, UserKind};
use crate::{broker, Inner};

/// Lock shards: claims and releases of one id are done one at a time, in order.
const LOCKS: usize = 64;

/// Tries at changing a key that keeps changing under us before giving up.
const TRIES: usize = 4;

/// The ids this node holds, each with the key's revision when this node's claim was recorded
/// (`None` until it is: while the claim is under way, or was not made while the broker was
/// away).
pub(crate) struct Claims {
    owned: parking_lot::Mutex<HashMap<ChannelId, Option<u64>>>,
    locks: Box<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
}

impl Claims {
    pub(crate) fn new() -> Claims {
        Claims {
            owned: parking_lot::Mutex::default(),
            locks: (0..LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn lock(&self, id: &str) -> &tokio::sync::Mutex<()> {
        &self.locks[self.hasher.hash_one(id) as usize % LOCKS]
    }
}

/// Opens the users' bucket, making it on first use.
pub(crate) async fn open_bucket(
    client: &Client,
    options: &NatsOptions,
) -> Result<kv::Store, NatsError> {
    let bucket = format!("kim-{}-users", options.cluster);
    let js = jetstream::new(client.clone());
    let error = |e: &dyn std::fmt::Display| NatsError::KeyValue {
        bucket: bucket.clone(),
        reason: e.to_string(),
    };
    let opened = tokio::time::timeout(options.request_timeout * 2, async {
        match js.get_key_value(bucket.as_str()).await {
            Ok(store) => Ok(store),
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| error(&e)),
        }
    })
    .await;
    opened.unwrap_or_else(|_| Err(error(&"timed out")))
}

/// Runs a broker call under the request timeout.
pub(crate) async fn bounded<T, E: std::fmt::Display>(
    inner: &Inner,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(inner.timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(broker(e)),
        Err(_) => Err(ClusterError::TimedOut),
    }
}

/// Claims `id` for this node (see [`Cluster::claim`](kim_core::cluster::Cluster::claim)).
pub(crate) async fn claim(
    inner: &Inner,
    id: &ChannelId,
    policy: DuplicatePolicy,
) -> Result<Claim, ClusterError> {
    let _order = inner.claims.lock(id.as_str()).lock().await;
    let held = inner
        .claims
        .owned
        .lock()
        .get(id)
        .is_some_and(Option::is_some);
    if held {
        // A newer login here replaced an older one of this node: the claim stands.
        inner.metrics.claimed(ClaimOutcome::Granted);
        return Ok(Claim::Granted);
    }
    let result = acquire(inner, id, policy).await;
    let outcome = match &result {
        Ok(Claim::Granted) => None,
        Ok(Claim::Refused { .. }) => Some(ClaimOutcome::Refused),
        Err(_) => Some(ClaimOutcome::Failed),
    };
    if let Some(outcome) = outcome {
        inner.metrics.claimed(outcome);
    }
    if let Ok(Claim::Refused { .. }) = result {
        inner.claims.owned.lock().remove(id);
    }
    result
}

/// Claims the key. The caller holds the id's lock. On an error the id stays held here
/// unconfirmed, answered for by this node and claimed again when the broker is back.
async fn acquire(
    inner: &Inner,
    id: &ChannelId,
    policy: DuplicatePolicy,
) -> Result<Claim, ClusterError> {
    // This node answers for the id from now on (its subject was subscribed at connect, before
    // any key could name it).
    inner.claims.owned.lock().entry(id.clone()).or_insert(None);
    if !inner.connected() {
        return Err(ClusterError::Disconnected);
    }
    let key = user_key(id.as_str());
    let me = Bytes::from(inner.node.clone());
    for _ in 0..TRIES {
        match tokio::time::timeout(inner.timeout, inner.users_kv.create(&key, me.clone())).await {
            Err(_) => return Err(ClusterError::TimedOut),
            Ok(Ok(revision)) => {
                record(inner, id, revision);
                inner.metrics.claimed(ClaimOutcome::Granted);
                return Ok(Claim::Granted);
            }
            Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Ok(Err(e)) => return Err(broker(e)),
        }
        let Some(entry) = bounded(inner, inner.users_kv.entry(key.clone())).await? else {
            continue;
        };
        if entry.operation != kv::Operation::Put {
            continue;
        }
        let owner = String::from_utf8_lossy(&entry.value).into_owned();
        let take = if owner == inner.node {
            // Ours from before a restart, or a release that never reached the broker.
            true
        } else {
            match ask(inner, &owner, id.as_str(), UserKind::Owns).await {
                Asked::Yes(_) => match policy {
                    DuplicatePolicy::Reject => return Ok(Claim::Refused { owner }),
                    DuplicatePolicy::Kick => {
                        let _ = ask(inner, &owner, id.as_str(), UserKind::Kick).await;
                        true
                    }
                },
                Asked::No | Asked::Nobody => true,
                Asked::Silent => !inner.nodes.is_alive(&owner),
                Asked::Failed(e) => return Err(e),
            }
        };
        if !take {
            return Err(ClusterError::TimedOut);
        }
        let update = inner.users_kv.update(&key, me.clone(), entry.revision);
        match tokio::time::timeout(inner.timeout, update).await {
            Err(_) => return Err(ClusterError::TimedOut),
            Ok(Ok(revision)) => {
                record(inner, id, revision);
                inner.metrics.claimed(ClaimOutcome::TakenOver);
                tracing::info!(%id, from = %owner, "claim taken over");
                return Ok(Claim::Granted);
            }
            // Someone else changed it first: look again.
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Ok(Err(e)) => return Err(broker(e)),
        }
    }
    Err(ClusterError::Broker(format!(
        "the claim on {id} kept changing hands"
    )))
}

/// Records a confirmed claim.
fn record(inner: &Inner, id: &ChannelId, revision: u64) {
    inner.claims.owned.lock().insert(id.clone(), Some(revision));
}

/// What a user's owner said.
pub(crate) enum Asked {
    /// It holds the id (on the node named).
    Yes(String),
    /// It does not hold it any more.
    No,
    /// Nobody answers: the node is gone.
    Nobody,
    /// Subscribed, but no answer in time.
    Silent,
    /// The broker failed.
    Failed(ClusterError),
}

/// Asks `node`, which holds `id` by the claims bucket, something about it, bounded by the
/// request timeout.
pub(crate) async fn ask(inner: &Inner, node: &str, id: &str, kind: UserKind) -> Asked {
    if !inner.connected() {
        return Asked::Failed(ClusterError::Disconnected);
    }
    let request = Request::new().timeout(Some(inner.timeout));
    let asked = inner
        .client
        .send_request(inner.subjects.user(node, id, kind), request);
    match tokio::time::timeout(inner.timeout + Duration::from_millis(100), asked).await {
        Err(_) => Asked::Silent,
        Ok(Ok(m)) => match m.payload.first() {
            Some(b'+') => Asked::Yes(String::from_utf8_lossy(&m.payload[1..]).into_owned()),
            _ => Asked::No,
        },
        Ok(Err(e)) => match e.kind() {
            RequestErrorKind::NoResponders => Asked::Nobody,
            RequestErrorKind::TimedOut => Asked::Silent,
            _ => Asked::Failed(broker(e)),
        },
    }
}

/// Gives `id` up, unless a newer login here holds it again.
pub(crate) async fn release(inner: &Inner, id: &ChannelId) {
    let _order = inner.claims.lock(id.as_str()).lock().await;
    if inner.local().is_some_and(|l| l.holds(id.as_str())) {
        return;
    }
    let Some(Some(revision)) = inner.claims.owned.lock().remove(id) else {
        return;
    };
    if !inner.connected() {
        // The key stays, naming this node: the next claim finds nobody answering for it and
        // takes it.
        inner.metrics.failed(Failure::Disconnected);
        return;
    }
    // Only our own revision: if the key changed hands meanwhile, it is not ours to delete.
    let deleted = inner
        .users_kv
        .delete_expect_revision(user_key(id.as_str()), Some(revision));
    if let Ok(Err(e)) = tokio::time::timeout(inner.timeout, deleted).await {
        tracing::debug!(%id, error = %e, "claim not deleted (it changed hands)");
    }
}

/// After the broker came back: every local id claimed again, or its claim confirmed. An id
/// that another node took meanwhile is closed here (the login there stands).
pub(crate) async fn reclaim_all(inner: &Inner) {
    let Some(local) = inner.local() else { return };
    let mut lost = 0;
    for id in local.ids() {
        let _order = inner.claims.lock(id.as_str()).lock().await;
        if !local.holds(id.as_str()) {
            continue;
        }
        let confirmed = match bounded(inner, inner.users_kv.entry(user_key(id.as_str()))).await {
            Ok(Some(e))
                if e.operation == kv::Operation::Put && *e.value == *inner.node.as_bytes() =>
            {
                record(inner, &id, e.revision);
                true
            }
            _ => false,
        };
        if confirmed {
            continue;
        }
        if let Some(revision) = inner.claims.owned.lock().get_mut(&id) {
            *revision = None;
        }
        match acquire(inner, &id, DuplicatePolicy::Reject).await {
            Ok(Claim::Granted) => {}
            Ok(Claim::Refused { owner }) => {
                lost += 1;
                tracing::warn!(%id, %owner, "id taken elsewhere while the broker was away; closing it here");
                inner.claims.owned.lock().remove(&id);
                local.kick(id.as_str());
            }
            Err(e) => tracing::warn!(%id, error = %e, "claim not made again"),
        }
    }
    if lost > 0 {
        tracing::warn!(
            lost,
            "local channels closed: their ids were claimed elsewhere"
        );
    }
}
