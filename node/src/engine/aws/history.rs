//! The aws engine's history: the recovery window on DynamoDB alone, in the
//! table `<prefix>History` (hash `pk` S, range `sk` N, TTL on `delete_at`).
//!
//! Items:
//! - a stream's head `h#<stream>`/0: `epoch` (random, drawn by whoever
//!   first names the stream: `if_not_exists`) and `seq` (the last position
//!   taken, `ADD 1` per request); its TTL is refreshed by every use, so a
//!   stream's identity outlives its messages by far;
//! - a slot `s#<stream>`/seq: `rq` (the request it holds), `at` (when the
//!   router that claimed the request started taking its positions: never
//!   later than the position was taken), `exp` (`at` + window +
//!   [`GRACE_MS`]); or `void` (nothing will ever be there);
//! - a request's claim `r#<request key>`/part: part 0 holds `d` (the data,
//!   once per request, not per user) and `x` (a broadcast's exclusions);
//!   every part holds `p<i>`, the position of target `i` in its stream, and
//!   `at`, when its claimer started taking positions.
//!
//! Recording a request (before any delivery, before the connection look-up):
//! 1. take a position in every target stream (`UpdateItem ADD seq`);
//! 2. claim the request, part by part (`PutItem` if absent); a part that
//!    exists already (the request is being routed again after a crash, or
//!    by two nodes at once) wins: its positions are used, and the ones just
//!    taken are voided;
//! 3. write every slot (`PutItem` if absent; one that exists holding this
//!    request is fine). A slot a reader voided meanwhile (the router was
//!    slower than [`HOLE_GRACE`]) is replaced: a new position, swapped into
//!    the claim with a conditional update, so every router agrees.
//!
//! So a request has ONE position per stream, however often it is routed,
//! and every slot resolves: a reader that finds a slot missing after a
//! fresh cursor waits [`HOLE_GRACE`] for an in-flight write, then voids it
//! (`PutItem` if absent: it either voids it or finds the entry). After a
//! cursor older than the window a missing or expired slot may have held a
//! message that is gone: `Expired`, never a skip. A message older than the
//! window is not replayed either (`Expired`): what a resume delivers is what
//! the window promises. Expiry is read from the items, never from whether
//! TTL has run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use bytestring::ByteString;
use futures_util::{StreamExt, TryStreamExt};
use sumu_shared::recovery::Position;
use sumu_shared::NotificationRequest;

use super::clients::call;
use crate::clock::now_ms;
use crate::engine::history::{
    Budget, Content, Heads, History, ReadError, Slot, Stamp, StreamKind, GRACE_MS,
};
use crate::engine::memory_history::random_epoch;
use crate::engine::{AwsErrorKind, EngineError};
use crate::metrics::Metrics;

/// How long a stream's head lives after its last use (its epoch with it).
const HEAD_TTL_SECS: u64 = 30 * 86_400;
/// How long a reader waits for a slot's write before voiding it: well
/// beyond a router's time between taking a position and writing its slot.
pub(crate) const HOLE_GRACE: Duration = Duration::from_secs(2);
/// The re-reads within [`HOLE_GRACE`] (the pauses before each, in ms).
const HOLE_REREADS: [u64; 5] = [100, 200, 400, 800, 500];
const _: () = assert!(
    HOLE_REREADS[0] + HOLE_REREADS[1] + HOLE_REREADS[2] + HOLE_REREADS[3] + HOLE_REREADS[4]
        == HOLE_GRACE.as_millis() as u64
);
/// Concurrent calls per request (positions, slots).
const CONCURRENCY: usize = 32;
/// Bytes one claim part may hold (DynamoDB items hold 400 KB).
const PART_BUDGET: usize = 350_000;
/// How often a slot is re-placed when readers keep voiding it.
const PLACE_ATTEMPTS: usize = 5;
/// BatchGetItem takes at most 100 keys.
const BATCH_GET_MAX: usize = 100;
const BATCH_ATTEMPTS: u32 = 5;

pub(crate) struct AwsHistory {
    client: aws_sdk_dynamodb::Client,
    metrics: Arc<Metrics>,
    table: String,
    window_ms: u64,
}

fn stream_name(stream: StreamKind, user: &str) -> String {
    match stream {
        StreamKind::User => format!("u:{user}"),
        StreamKind::Broadcast => "b".to_string(),
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn num(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn key(pk: String, sk: u64) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), n(sk))])
}

fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The claim's key: the request id and a hash of the request, so an id a
/// node reuses (after a restart) for another request claims anew.
fn request_key(request_id: &str, request: &NotificationRequest) -> String {
    let mut h = fnv1a(request.data.get().as_bytes(), 0xcbf2_9ce4_8422_2325);
    for list in [&request.users, &request.exclude_users] {
        h = fnv1a(b"\0", h);
        for u in list {
            h = fnv1a(u.as_bytes(), fnv1a(b"\x01", h));
        }
    }
    format!("{request_id}#{h:016x}")
}

/// One stream a request is recorded in.
#[derive(Debug, Clone)]
struct Target {
    stream: String,
    /// The user (None: the broadcast stream).
    user: Option<String>,
    /// Its attribute in the claim, and the claim part holding it.
    attr: String,
    part: u64,
}

/// The streams of `request` and where their positions sit in the claim: a
/// pure function of the request, so every router of it plans the same.
fn plan(request: &NotificationRequest) -> Vec<Target> {
    if request.is_broadcast() {
        return vec![Target {
            stream: "b".into(),
            user: None,
            attr: "p0".into(),
            part: 0,
        }];
    }
    let mut part = 0;
    let mut used = request.data.get().len() + 200;
    request
        .targets()
        .enumerate()
        .map(|(i, user)| {
            let attr = format!("p{i}");
            // The attribute's name, a number of up to 20 digits, overhead.
            let cost = attr.len() + 24;
            if used + cost > PART_BUDGET {
                part += 1;
                used = 200;
            }
            used += cost;
            Target {
                stream: format!("u:{user}"),
                user: Some(user.clone()),
                attr,
                part,
            }
        })
        .collect()
}

/// A slot as read.
#[derive(Debug, Clone)]
enum Stored {
    Entry { rq: String, at: u64, exp: u64 },
    Void,
}

fn stored(item: &HashMap<String, AttributeValue>) -> Option<(u64, Stored)> {
    let seq = num(item, "sk")?;
    if item.get("void").is_some() {
        return Some((seq, Stored::Void));
    }
    Some((
        seq,
        Stored::Entry {
            rq: item.get("rq")?.as_s().ok()?.clone(),
            at: num(item, "at")?,
            exp: num(item, "exp")?,
        },
    ))
}

impl AwsHistory {
    pub(crate) fn new(
        client: aws_sdk_dynamodb::Client,
        metrics: Arc<Metrics>,
        table: String,
        window: Duration,
    ) -> AwsHistory {
        AwsHistory {
            client,
            metrics,
            table,
            window_ms: window.as_millis() as u64,
        }
    }

    fn build(
        &self,
        what: &'static str,
    ) -> impl Fn(aws_sdk_dynamodb::error::BuildError) -> EngineError {
        move |source| EngineError::Build { what, source }
    }

    /// Takes the next position of `stream`: (epoch, seq).
    async fn allocate(&self, stream: &str) -> Result<(u64, u64), EngineError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("h#{stream}"), 0)))
            .update_expression("ADD seq :one SET epoch = if_not_exists(epoch, :e), delete_at = :d")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":e", n(random_epoch()))
            .expression_attribute_values(":d", n(now_ms() / 1000 + HEAD_TTL_SECS))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send();
        let out = call(&self.metrics, "dynamodb", "UpdateItem", request).await?;
        let item = out.attributes().cloned().unwrap_or_default();
        match (num(&item, "epoch"), num(&item, "seq")) {
            (Some(e), Some(q)) => Ok((e, q)),
            _ => Err(EngineError::Missing {
                what: "position of history stream",
                name: stream.to_string(),
            }),
        }
    }

    /// The head of `stream`, created if it does not exist yet (so its epoch
    /// is fixed from now on).
    async fn head(&self, stream: &str) -> Result<(u64, u64), EngineError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("h#{stream}"), 0)))
            .update_expression(
                "SET epoch = if_not_exists(epoch, :e), seq = if_not_exists(seq, :z), delete_at = :d",
            )
            .expression_attribute_values(":e", n(random_epoch()))
            .expression_attribute_values(":z", n(0))
            .expression_attribute_values(":d", n(now_ms() / 1000 + HEAD_TTL_SECS))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send();
        let out = call(&self.metrics, "dynamodb", "UpdateItem", request).await?;
        let item = out.attributes().cloned().unwrap_or_default();
        match (num(&item, "epoch"), num(&item, "seq")) {
            (Some(e), Some(q)) => Ok((e, q)),
            _ => Err(EngineError::Missing {
                what: "head of history stream",
                name: stream.to_string(),
            }),
        }
    }

    /// Makes `stream`/`seq` void unless something is there; answers what
    /// is there now.
    async fn void(&self, stream: &str, seq: u64) -> Result<Stored, EngineError> {
        let exp = now_ms() + self.window_ms + GRACE_MS;
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key(format!("s#{stream}"), seq)))
            .item("void", AttributeValue::Bool(true))
            .item("exp", n(exp))
            .item("delete_at", n(exp / 1000 + 1))
            .condition_expression("attribute_not_exists(pk)")
            .send();
        match call(&self.metrics, "dynamodb", "PutItem", request).await {
            Ok(_) => Ok(Stored::Void),
            Err(e) if e.kind == AwsErrorKind::ConditionFailed => self
                .slot(stream, seq)
                .await?
                .ok_or_else(|| EngineError::Missing {
                    what: "history slot",
                    name: format!("{stream}/{seq}"),
                }),
            Err(e) => Err(e.into()),
        }
    }

    async fn slot(&self, stream: &str, seq: u64) -> Result<Option<Stored>, EngineError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("s#{stream}"), seq)))
            .consistent_read(true)
            .send();
        let out = call(&self.metrics, "dynamodb", "GetItem", request).await?;
        Ok(out.item().and_then(stored).map(|(_, s)| s))
    }

    /// Claims part `part` of `rq` with these positions; answers the
    /// positions the claim holds (these, or an earlier router's).
    async fn claim(
        &self,
        rq: &str,
        part: u64,
        mut item: HashMap<String, AttributeValue>,
    ) -> Result<HashMap<String, AttributeValue>, EngineError> {
        item.extend(key(format!("r#{rq}"), part));
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .condition_expression("attribute_not_exists(pk)")
            .send();
        match call(&self.metrics, "dynamodb", "PutItem", request).await {
            Ok(_) => Ok(item),
            // Another router claimed it first: its claim is the one.
            Err(e) if e.kind == AwsErrorKind::ConditionFailed => self.claim_part(rq, part).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the slot of `target` at `seq` (its claim says so); when a
    /// reader voided it meanwhile, takes a new position and swaps it into
    /// the claim. Answers the position the slot ended at.
    async fn place(
        &self,
        rq: &str,
        target: &Target,
        mut epoch: u64,
        mut seq: u64,
        mut at: u64,
    ) -> Result<Position, EngineError> {
        for _ in 0..PLACE_ATTEMPTS {
            let exp = at + self.window_ms + GRACE_MS;
            let request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(key(format!("s#{}", target.stream), seq)))
                .item("rq", s(rq))
                .item("at", n(at))
                .item("exp", n(exp))
                .item("delete_at", n(exp / 1000 + 1))
                .condition_expression("attribute_not_exists(pk)")
                .send();
            match call(&self.metrics, "dynamodb", "PutItem", request).await {
                Ok(_) => {
                    return Ok(Position {
                        epoch,
                        seq,
                        at_ms: at,
                    })
                }
                Err(e) if e.kind == AwsErrorKind::ConditionFailed => {}
                Err(e) => return Err(e.into()),
            }
            match self.slot(&target.stream, seq).await? {
                Some(Stored::Entry { rq: held, at, .. }) if held == rq => {
                    return Ok(Position {
                        epoch,
                        seq,
                        at_ms: at,
                    })
                }
                _ => {}
            }
            // Voided under us: a new position, agreed through the claim.
            let new_at = now_ms();
            let (new_epoch, new_seq) = self.allocate(&target.stream).await?;
            let request = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(format!("r#{rq}"), target.part)))
                .update_expression("SET #p = :new")
                .condition_expression("#p = :old")
                .expression_attribute_names("#p", &target.attr)
                .expression_attribute_values(":new", n(new_seq))
                .expression_attribute_values(":old", n(seq))
                .send();
            match call(&self.metrics, "dynamodb", "UpdateItem", request).await {
                Ok(_) => (epoch, seq, at) = (new_epoch, new_seq, new_at),
                Err(e) if e.kind == AwsErrorKind::ConditionFailed => {
                    // Another router swapped first: use its position (taken
                    // after this one started; `new_at` is no later).
                    let claim = self.claim_part(rq, target.part).await?;
                    seq = num(&claim, &target.attr).ok_or_else(|| EngineError::Missing {
                        what: "history claim position",
                        name: format!("{rq}/{}", target.attr),
                    })?;
                    at = new_at;
                    let _ = self.void(&target.stream, new_seq).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Missing {
            what: "history slot that stays written",
            name: format!("{}/{seq}", target.stream),
        })
    }

    async fn claim_part(
        &self,
        rq: &str,
        part: u64,
    ) -> Result<HashMap<String, AttributeValue>, EngineError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("r#{rq}"), part)))
            .consistent_read(true)
            .send();
        let out = call(&self.metrics, "dynamodb", "GetItem", request).await?;
        out.item().cloned().ok_or_else(|| EngineError::Missing {
            what: "history claim",
            name: format!("{rq}/{part}"),
        })
    }

    /// The slots of `stream` in `from..=to`, consistent.
    async fn query(
        &self,
        stream: &str,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<u64, Stored>, EngineError> {
        let mut out = BTreeMap::new();
        let mut start = None;
        loop {
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
                .expression_attribute_values(":pk", s(format!("s#{stream}")))
                .expression_attribute_values(":a", n(from))
                .expression_attribute_values(":b", n(to))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send();
            let page = call(&self.metrics, "dynamodb", "Query", request).await?;
            out.extend(page.items().iter().filter_map(stored));
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Consistent BatchGetItem of `keys` (any number), retrying unprocessed
    /// keys with backoff.
    async fn batch_get(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
        projection: Option<(&str, &[(&str, &str)])>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, EngineError> {
        let mut found = Vec::new();
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut pending = chunk.to_vec();
            for attempt in 0..BATCH_ATTEMPTS {
                if pending.is_empty() {
                    break;
                }
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                }
                let mut ka = KeysAndAttributes::builder()
                    .set_keys(Some(pending.clone()))
                    .consistent_read(true);
                if let Some((expr, names)) = projection {
                    ka = ka.projection_expression(expr);
                    for (k, v) in names {
                        ka = ka.expression_attribute_names(*k, *v);
                    }
                }
                let ka = ka.build().map_err(self.build("BatchGetItem"))?;
                let request = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, ka)
                    .send();
                let out = call(&self.metrics, "dynamodb", "BatchGetItem", request).await?;
                if let Some(items) = out.responses().and_then(|r| r.get(&self.table)) {
                    found.extend(items.iter().cloned());
                }
                pending = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .map(|ka| ka.keys().to_vec())
                    .unwrap_or_default();
            }
            if !pending.is_empty() {
                return Err(EngineError::Unprocessed {
                    attempts: BATCH_ATTEMPTS,
                });
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl History for AwsHistory {
    async fn record(
        &self,
        request_id: &str,
        request: &NotificationRequest,
    ) -> Result<Stamp, EngineError> {
        let targets = plan(request);
        if targets.is_empty() {
            return Ok(Stamp::default());
        }
        let rq = request_key(request_id, request);
        // Before any position is taken: every slot's `at` is at or before
        // its position was taken (what makes a cursor's time a bound).
        let at = now_ms();
        // 1. A position in every stream.
        // (Owned items: async-trait futures cannot borrow through the
        // stream's closures.)
        let taken: Vec<(u64, u64)> = futures_util::stream::iter(targets.clone())
            .map(|t| async move { self.allocate(&t.stream).await })
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        // 2. The claim, part by part: whichever router claimed a part first
        // decides its positions (and their time).
        let parts = targets.last().map_or(0, |t| t.part) + 1;
        let mut items: Vec<HashMap<String, AttributeValue>> = vec![HashMap::new(); parts as usize];
        items[0].insert("d".into(), s(request.data.get()));
        if request.is_broadcast() {
            let excluded = request.exclude_users.iter().map(|u| s(u.clone())).collect();
            items[0].insert("x".into(), AttributeValue::L(excluded));
        }
        let delete_at = (at + self.window_ms + GRACE_MS) / 1000 + 86_400;
        for item in &mut items {
            item.insert("at".into(), n(at));
            item.insert("delete_at".into(), n(delete_at));
        }
        for (t, (_, seq)) in targets.iter().zip(&taken) {
            items[t.part as usize].insert(t.attr.clone(), n(*seq));
        }
        let claims: Vec<HashMap<String, AttributeValue>> =
            futures_util::stream::iter(items.into_iter().enumerate())
                .map(|(part, item)| {
                    let rq = &rq;
                    async move { self.claim(rq, part as u64, item).await }
                })
                .buffered(CONCURRENCY)
                .try_collect()
                .await?;
        let mut agreed = Vec::with_capacity(targets.len());
        let mut orphans = Vec::new();
        for (t, (epoch, seq)) in targets.iter().zip(&taken) {
            let claimed =
                num(&claims[t.part as usize], &t.attr).ok_or_else(|| EngineError::Missing {
                    what: "history claim position",
                    name: format!("{rq}/{}", t.attr),
                })?;
            if claimed != *seq {
                orphans.push((t.stream.clone(), *seq));
            }
            let claimed_at = num(&claims[t.part as usize], "at").unwrap_or(at);
            agreed.push((*epoch, claimed, claimed_at));
        }
        // What this router took but an earlier one decided: void now, so
        // readers do not wait on them (they would void them anyway).
        futures_util::stream::iter(orphans)
            .for_each_concurrent(CONCURRENCY, |(stream, seq)| async move {
                let _ = self.void(&stream, seq).await;
            })
            .await;
        // 3. The slots.
        let rq = &rq;
        let placed: Vec<Position> =
            futures_util::stream::iter(targets.clone().into_iter().zip(agreed))
                .map(
                    |(t, (epoch, seq, at))| async move { self.place(rq, &t, epoch, seq, at).await },
                )
                .buffered(CONCURRENCY)
                .try_collect()
                .await?;
        let mut stamp = Stamp::default();
        for (t, position) in targets.into_iter().zip(placed) {
            match t.user {
                None => stamp.broadcast = Some(position),
                Some(user) => {
                    stamp.users.insert(user, position);
                }
            }
        }
        Ok(stamp)
    }

    async fn heads(&self, user_id: &str) -> Result<Heads, EngineError> {
        let at_ms = now_ms();
        let user_stream = stream_name(StreamKind::User, user_id);
        let items = self
            .batch_get(
                vec![key(format!("h#{user_stream}"), 0), key("h#b".into(), 0)],
                None,
            )
            .await?;
        let mut found: HashMap<String, (u64, u64)> = HashMap::new();
        for item in &items {
            if let (Some(pk), Some(e), Some(q)) = (
                item.get("pk").and_then(|v| v.as_s().ok()),
                num(item, "epoch"),
                num(item, "seq"),
            ) {
                found.insert(pk.clone(), (e, q));
            }
        }
        let mut heads = [Position::NONE; 2];
        for (i, stream) in [user_stream, "b".to_string()].iter().enumerate() {
            let (epoch, seq) = match found.get(&format!("h#{stream}")) {
                Some(h) => *h,
                // A stream nobody has named yet: fix its epoch now.
                None => self.head(stream).await?,
            };
            heads[i] = Position { epoch, seq, at_ms };
        }
        Ok(Heads {
            user: heads[0],
            broadcast: heads[1],
        })
    }

    async fn read(
        &self,
        user_id: &str,
        stream: StreamKind,
        after: Position,
        upto: u64,
        budget: &mut Budget,
    ) -> Result<Vec<Slot>, ReadError> {
        if upto <= after.seq {
            return Ok(Vec::new());
        }
        let name = stream_name(stream, user_id);
        let unavailable = ReadError::Unavailable;
        // Every entry after a fresh position is inside the window; after an
        // old one, a missing entry may be an expired one.
        let fresh = now_ms().saturating_sub(after.at_ms) <= self.window_ms;
        let mut slots = self
            .query(&name, after.seq + 1, upto)
            .await
            .map_err(unavailable)?;
        let missing = |slots: &BTreeMap<u64, Stored>| -> Vec<u64> {
            let now = now_ms();
            (after.seq + 1..=upto)
                .filter(|seq| match slots.get(seq) {
                    Some(Stored::Entry { exp, .. }) => *exp < now,
                    Some(Stored::Void) => false,
                    None => true,
                })
                .collect()
        };
        let mut holes = missing(&slots);
        if !holes.is_empty() && !fresh {
            return Err(ReadError::Expired);
        }
        // In flight (a router between its position and its slot) or an
        // orphan (a router that died there): wait, then void.
        for pause in HOLE_REREADS {
            if holes.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let keys = holes.iter().map(|q| key(format!("s#{name}"), *q)).collect();
            for item in self.batch_get(keys, None).await.map_err(unavailable)? {
                if let Some((seq, stored)) = stored(&item) {
                    slots.insert(seq, stored);
                }
            }
            holes = missing(&slots);
        }
        for seq in holes {
            let now = self.void(&name, seq).await.map_err(unavailable)?;
            if let Stored::Entry { exp, .. } = &now {
                if *exp < now_ms() {
                    return Err(ReadError::Expired);
                }
            }
            slots.insert(seq, now);
        }
        // The requests' data and exclusions, once per request.
        let wanted: HashSet<String> = slots
            .values()
            .filter_map(|s| match s {
                Stored::Entry { rq, .. } => Some(rq.clone()),
                Stored::Void => None,
            })
            .collect();
        let keys = wanted.iter().map(|rq| key(format!("r#{rq}"), 0)).collect();
        let parts = self
            .batch_get(keys, Some(("pk, #d, #x", &[("#d", "d"), ("#x", "x")])))
            .await
            .map_err(unavailable)?;
        let mut requests: HashMap<String, (ByteString, Vec<String>)> = HashMap::new();
        for item in parts {
            let Some(rq) = item
                .get("pk")
                .and_then(|v| v.as_s().ok())
                .and_then(|pk| pk.strip_prefix("r#"))
            else {
                continue;
            };
            let data = item
                .get("d")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            let exclude = item
                .get("x")
                .and_then(|v| v.as_l().ok())
                .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
                .unwrap_or_default();
            requests.insert(rq.to_string(), (ByteString::from(data), exclude));
        }
        let oldest = now_ms().saturating_sub(self.window_ms);
        let mut out = Vec::with_capacity(slots.len());
        for (seq, stored) in slots {
            let (at_ms, content) = match stored {
                Stored::Void => (after.at_ms, Content::Skip),
                Stored::Entry { rq, at, .. } => {
                    // Written before any of its slots: a slot without its
                    // claim is not something to guess about.
                    let Some((data, exclude)) = requests.get(&rq) else {
                        return Err(unavailable(EngineError::Missing {
                            what: "history claim",
                            name: rq,
                        }));
                    };
                    let content = if stream == StreamKind::Broadcast
                        && exclude.iter().any(|u| u == user_id)
                    {
                        Content::Skip
                    } else if at < oldest {
                        // Older than the window: not replayed, not skipped.
                        return Err(ReadError::Expired);
                    } else {
                        Content::Message(data.clone())
                    };
                    (at, content)
                }
            };
            let len = match &content {
                Content::Message(d) => d.len(),
                Content::Skip => 0,
            };
            if !budget.take(len) {
                return Err(ReadError::TooFar);
            }
            out.push(Slot {
                seq,
                at_ms,
                rank: at_ms,
                content,
            });
        }
        Ok(out)
    }
}

/// Against the real emulator (ministack) through the real SDK: these need
/// `infra/local/.venv` (`infra/local/emulator install`), like the aws
/// integration tests.
#[cfg(test)]
mod emulator_tests {
    use super::*;
    use crate::engine::aws::clients::Clients;
    use crate::engine::aws::resources::create_history_table;
    use crate::engine::history::{resume, Resumed};
    use sumu_shared::recovery::RecoveryCode;

    struct Fixture {
        _emulator: sumu_testkit::Emulator,
        history: AwsHistory,
        client: aws_sdk_dynamodb::Client,
    }

    async fn fixture(window: Duration) -> Fixture {
        let emulator = sumu_testkit::Emulator::start();
        let (_, clients) = Clients::for_emulator(&emulator).await;
        create_history_table(&clients, "TestHistory").await.unwrap();
        Fixture {
            _emulator: emulator,
            history: AwsHistory::new(
                clients.dynamodb.clone(),
                clients.metrics.clone(),
                "TestHistory".into(),
                window,
            ),
            client: clients.dynamodb,
        }
    }

    fn req(body: &str) -> NotificationRequest {
        NotificationRequest::parse(body.as_bytes()).unwrap()
    }

    const BIG: Budget = Budget {
        positions: 1000,
        bytes: 1 << 20,
    };

    fn messages(r: &Resumed) -> Vec<String> {
        r.slots
            .iter()
            .filter_map(|(_, s)| match &s.content {
                Content::Message(d) => Some(d.to_string()),
                Content::Skip => None,
            })
            .collect()
    }

    async fn since(f: &Fixture, user: &str) -> Option<(Position, Position)> {
        let h = f.history.heads(user).await.unwrap();
        Some((h.user, h.broadcast))
    }

    #[actix::test]
    async fn emulator_records_and_resumes_exactly_what_targeted_the_user() {
        let f = fixture(Duration::from_secs(120)).await;
        let from = since(&f, "a").await;
        // A second heads read of a stream nobody wrote keeps its epoch.
        assert_eq!(since(&f, "a").await.unwrap().0.epoch, from.unwrap().0.epoch);
        for (id, body) in [
            ("1", r#"{"users":["a","b"],"data":{"n": 1}}"#),
            ("2", r#"{"users":["b"],"data":2}"#),
            ("3", r#"{"data":3}"#),
            ("4", r#"{"exclude_users":["a"],"data":4}"#),
            ("5", r#"{"users":["a"],"exclude_users":["a"],"data":5}"#),
            ("6", r#"{"users":["a"],"data":6}"#),
        ] {
            f.history.record(id, &req(body)).await.unwrap();
        }
        let r = resume(&f.history, "a", from, BIG).await.unwrap();
        assert_eq!(messages(&r), [r#"{"n": 1}"#, "3", "6"]);
        assert_eq!(r.slots.len(), 4, "the excluded broadcast is a skip");
        let again = resume(
            &f.history,
            "a",
            Some((r.heads.user, r.heads.broadcast)),
            BIG,
        )
        .await
        .unwrap();
        assert!(again.slots.is_empty());
        let b = resume(&f.history, "b", since(&f, "b").await, BIG)
            .await
            .unwrap();
        assert!(b.slots.is_empty());
        assert_eq!(b.heads.user.seq, 2);
    }

    #[actix::test]
    async fn emulator_a_request_routed_twice_has_one_position_per_stream() {
        let f = fixture(Duration::from_secs(120)).await;
        let from = since(&f, "a").await;
        let request = req(r#"{"users":["a","b"],"data":"once"}"#);
        let first = f.history.record("r1", &request).await.unwrap();
        // The same request again (its router crashed before deleting it).
        let second = f.history.record("r1", &request).await.unwrap();
        let seqs = |s: &Stamp| (s.users["a"].seq, s.users["b"].seq);
        assert_eq!(seqs(&first), seqs(&second));
        // The same id with other content is another request.
        let other = f
            .history
            .record("r1", &req(r#"{"users":["a"],"data":"other"}"#))
            .await
            .unwrap();
        assert!(other.users["a"].seq > second.users["a"].seq);
        let started = std::time::Instant::now();
        let r = resume(&f.history, "a", from, BIG).await.unwrap();
        assert_eq!(messages(&r), ["\"once\"", "\"other\""]);
        // The second routing's own positions were voided at once: the
        // reader did not wait for them.
        assert_eq!(r.slots.len(), 3);
        assert!(started.elapsed() < HOLE_GRACE, "{:?}", started.elapsed());
    }

    #[actix::test]
    async fn emulator_holes_are_resolved_exactly() {
        let f = fixture(Duration::from_secs(120)).await;
        let from = since(&f, "a").await;
        // A router that took a position and died before its slot.
        let (_, orphan) = f.history.allocate("u:a").await.unwrap();
        f.history
            .record("r1", &req(r#"{"users":["a"],"data":1}"#))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let r = resume(&f.history, "a", from, BIG).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "voided without waiting"
        );
        assert_eq!(messages(&r), ["1"]);
        assert_eq!(
            r.slots[0].1,
            Slot {
                content: Content::Skip,
                ..r.slots[0].1.clone()
            }
        );
        assert_eq!(r.slots[0].1.seq, orphan);
        // A slot a reader voided before its router wrote it: the router
        // takes another position and the claim follows.
        let head = f.history.heads("a").await.unwrap().user;
        f.history.void("u:a", head.seq + 1).await.unwrap();
        let stamp = f
            .history
            .record("r2", &req(r#"{"users":["a"],"data":2}"#))
            .await
            .unwrap();
        assert_eq!(stamp.users["a"].seq, head.seq + 2);
        let r = resume(&f.history, "a", Some((head, r.heads.broadcast)), BIG)
            .await
            .unwrap();
        assert_eq!(messages(&r), ["2"]);
        // Routed again, the request keeps its new position.
        let again = f
            .history
            .record("r2", &req(r#"{"users":["a"],"data":2}"#))
            .await
            .unwrap();
        assert_eq!(again.users["a"].seq, head.seq + 2);
    }

    #[actix::test]
    async fn emulator_old_cursors_are_expired_only_where_something_may_be_gone() {
        let f = fixture(Duration::from_secs(2)).await;
        let from = since(&f, "a").await.unwrap();
        tokio::time::sleep(Duration::from_millis(2200)).await;
        f.history
            .record("r1", &req(r#"{"users":["a"],"data":1}"#))
            .await
            .unwrap();
        // The cursor is older than the window, but every slot after it is
        // there and its message is inside the window: replayed.
        let r = resume(&f.history, "a", Some(from), BIG).await.unwrap();
        assert_eq!(messages(&r), ["1"]);
        let code = |r: Result<Resumed, crate::engine::history::ResumeFailed>| {
            r.map(|_| ()).unwrap_err().code
        };
        // The message is older than the window now: not replayed, not
        // skipped.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        assert_eq!(
            code(resume(&f.history, "a", Some(from), BIG).await),
            RecoveryCode::PositionExpired
        );
        // A hole after an old cursor may be an expired entry: expired (a
        // fresh cursor would wait and void it).
        let old = Position {
            at_ms: now_ms() - 10_000,
            ..f.history.heads("a").await.unwrap().user
        };
        f.history.allocate("u:a").await.unwrap();
        let stamp = f
            .history
            .record("r2", &req(r#"{"users":["a"],"data":2}"#))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            code(resume(&f.history, "a", Some((old, from.1)), BIG).await),
            RecoveryCode::PositionExpired
        );
        assert!(started.elapsed() < HOLE_GRACE, "it waited for the hole");
        // An entry past its expiry counts as gone, whether or not TTL ran.
        let request = f
            .client
            .update_item()
            .table_name("TestHistory")
            .set_key(Some(key("s#u:a".into(), stamp.users["a"].seq)))
            .update_expression("SET exp = :past")
            .expression_attribute_values(":past", n(1))
            .send();
        request.await.unwrap();
        let fresh = Position {
            at_ms: now_ms(),
            seq: stamp.users["a"].seq - 1,
            ..from.0
        };
        assert_eq!(
            code(resume(&f.history, "a", Some((fresh, from.1)), BIG).await),
            RecoveryCode::PositionExpired
        );
        let mut reset = from.0;
        reset.epoch ^= 1;
        assert_eq!(
            code(resume(&f.history, "a", Some((reset, from.1)), BIG).await),
            RecoveryCode::PositionExpired
        );
    }
}
