//! A group's membership as bytes, and back: what a restart needs so that the members of
//! before it carry on as they were (same ids, epochs and partitions) rather than each
//! learning at its next heartbeat that it is unknown. Pure: the file and when it is
//! written are the driver's (`groups/members_file.rs`); the byte table is in
//! `storage-format.md` ("A group's members").
//!
//! Deadlines are not kept: a restored member's session starts again when the group is
//! restored, as Kafka's coordinator does when it takes a group over. A member that died
//! while the server was down is removed once that session ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{Member, Membership, Subscription, MAX_MEMBERS};
use crate::groups::journal::Cursor;
use crate::groups::subscriptions::{Scope, SubscriptionTally};
use crate::groups::{TopicsView, Tp};

const TOPICS: u8 = 0;
const PATTERN: u8 = 1;
const DAMAGED: &str = "it is damaged";

/// What a scoped pattern's principal may read now (`grpc/auth/access.rs`'s
/// `read_scope`), or None if the server cannot say (no access control list any more).
pub type ScopeOf<'a> = &'a dyn Fn(&str) -> Option<Scope>;

fn put_str16(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_str32(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Partitions by topic: `topics u32`, then per topic `id u128 (big-endian, as in the
/// offsets' files) | count u32 | partition u32 ...`.
fn put_tps(out: &mut Vec<u8>, tps: &BTreeSet<Tp>) {
    let mut by_topic: BTreeMap<u128, Vec<u32>> = BTreeMap::new();
    for (topic, partition) in tps {
        by_topic.entry(*topic).or_default().push(*partition);
    }
    out.extend_from_slice(&(by_topic.len() as u32).to_le_bytes());
    for (topic, partitions) in by_topic {
        out.extend_from_slice(&topic.to_be_bytes());
        out.extend_from_slice(&(partitions.len() as u32).to_le_bytes());
        for p in partitions {
            out.extend_from_slice(&p.to_le_bytes());
        }
    }
}

fn str16(c: &mut Cursor<'_>) -> Option<String> {
    let len = c.u16()? as usize;
    String::from_utf8(c.take(len)?.to_vec()).ok()
}

fn str32(c: &mut Cursor<'_>) -> Option<String> {
    let len = c.u32()? as usize;
    String::from_utf8(c.take(len)?.to_vec()).ok()
}

fn tps(c: &mut Cursor<'_>) -> Option<BTreeSet<Tp>> {
    let mut out = BTreeSet::new();
    for _ in 0..c.u32()? {
        let topic = c.u128_be()?;
        let count = c.u32()? as usize;
        // Bounded by the bytes there are, not by what a damaged count says.
        if count > c.remaining() / 4 {
            return None;
        }
        for _ in 0..count {
            out.insert((topic, c.u32()?));
        }
    }
    Some(out)
}

/// An epoch: one that far from zero was not written by strom (hostile-sweep finding:
/// an epoch of `i64::MAX` wrapped at the next new epoch).
fn read_epoch(c: &mut Cursor<'_>) -> Result<i64, &'static str> {
    let epoch = c.u64().ok_or(DAMAGED)?;
    match epoch <= (i64::MAX / 2) as u64 {
        true => Ok(epoch as i64),
        false => Err(DAMAGED),
    }
}

/// A subscription, or why it cannot be restored.
fn subscription(c: &mut Cursor<'_>, scope_of: ScopeOf<'_>) -> Result<Subscription, &'static str> {
    match c.u8().ok_or(DAMAGED)? {
        TOPICS => {
            let count = c.u32().ok_or(DAMAGED)? as usize;
            if count > c.remaining() / 2 {
                return Err(DAMAGED);
            }
            let names = (0..count).map(|_| str16(c)).collect::<Option<Vec<_>>>();
            crate::groups::subscription(names.ok_or(DAMAGED)?, "").map_err(|_| DAMAGED)
        }
        PATTERN => {
            let text = str32(c).ok_or(DAMAGED)?;
            let scope = match c.u8().ok_or(DAMAGED)? {
                0 => None,
                // A principal the server can no longer scope: not restored, rather
                // than matched unscoped (it would be shown topics it may not read).
                _ => Some(scope_of(&str16(c).ok_or(DAMAGED)?).ok_or(
                    "a member's topic_pattern is scoped by an access control list the server no longer has",
                )?),
            };
            let pattern = crate::groups::subscription(Vec::new(), &text).map_err(|_| DAMAGED)?;
            Ok(pattern.scoped(scope))
        }
        _ => Err(DAMAGED),
    }
}

impl Membership {
    /// The membership as bytes (everything but the members' deadlines).
    pub fn saved(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 128 * self.members.len());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        let distinct: Vec<&Arc<Subscription>> = self.subscriptions.distinct().collect();
        let index: HashMap<*const Subscription, u32> = distinct
            .iter()
            .enumerate()
            .map(|(i, sub)| (Arc::as_ptr(sub), i as u32))
            .collect();
        out.extend_from_slice(&(distinct.len() as u32).to_le_bytes());
        for sub in &distinct {
            match &***sub {
                Subscription::Topics(names) => {
                    out.push(TOPICS);
                    out.extend_from_slice(&(names.len() as u32).to_le_bytes());
                    names.iter().for_each(|n| put_str16(&mut out, n));
                }
                Subscription::Pattern(text, _, scope) => {
                    out.push(PATTERN);
                    put_str32(&mut out, text);
                    match scope {
                        None => out.push(0),
                        Some(scope) => {
                            out.push(1);
                            put_str16(&mut out, &scope.who);
                        }
                    }
                }
            }
        }
        out.extend_from_slice(&(self.members.len() as u32).to_le_bytes());
        let none = BTreeSet::new();
        for m in self.members.values() {
            put_str16(&mut out, &m.id);
            match &m.instance_id {
                None => out.push(0),
                Some(instance) => {
                    out.push(1);
                    put_str16(&mut out, instance);
                }
            }
            out.extend_from_slice(&m.epoch.to_le_bytes());
            out.extend_from_slice(&m.previous_epoch.to_le_bytes());
            let sub = index[&Arc::as_ptr(&m.subscription)];
            out.extend_from_slice(&sub.to_le_bytes());
            out.extend_from_slice(&m.session_timeout_ms.to_le_bytes());
            out.push(m.departed as u8);
            put_tps(&mut out, &m.assigned);
            put_tps(&mut out, &m.revoking);
            put_tps(&mut out, self.target.get(&*m.id).unwrap_or(&none));
        }
        out
    }

    /// The membership `saved` wrote, its sessions starting at `now_ms`, counted in
    /// `tally`; or why it cannot be restored. The target is computed again against the
    /// topics as they are now (a new group epoch): topics may have come and gone while
    /// the server was down. Members keep their epochs, which the next heartbeat moves on.
    pub fn restore(
        group: &str,
        heartbeat_interval_ms: u64,
        view: Arc<TopicsView>,
        tally: Arc<SubscriptionTally>,
        bytes: &[u8],
        now_ms: u64,
        scope_of: ScopeOf<'_>,
    ) -> Result<Membership, &'static str> {
        let mut m = Membership::new(group, heartbeat_interval_ms, view).counted_in(tally);
        let c = &mut Cursor(bytes);
        m.epoch = read_epoch(c)?;
        let count = c.u32().ok_or(DAMAGED)? as usize;
        if count > MAX_MEMBERS {
            return Err(DAMAGED);
        }
        let subs = (0..count)
            .map(|_| subscription(c, scope_of))
            .collect::<Result<Vec<_>, _>>()?;
        let members = c.u32().ok_or(DAMAGED)? as usize;
        if members > MAX_MEMBERS {
            return Err(DAMAGED);
        }
        for _ in 0..members {
            m.restore_member(c, &subs, now_ms)?;
        }
        if !c.is_empty() {
            return Err(DAMAGED);
        }
        m.scope_era = m.subscriptions.era().unwrap_or(0);
        m.bump();
        Ok(m)
    }

    fn restore_member(
        &mut self,
        c: &mut Cursor<'_>,
        subs: &[Subscription],
        now_ms: u64,
    ) -> Result<(), &'static str> {
        let id: Arc<str> = str16(c).ok_or(DAMAGED)?.into();
        let instance_id = match c.u8().ok_or(DAMAGED)? {
            0 => None,
            _ => Some(str16(c).ok_or(DAMAGED)?),
        };
        let epoch = read_epoch(c)?;
        let previous_epoch = read_epoch(c)?;
        let sub = subs.get(c.u32().ok_or(DAMAGED)? as usize).ok_or(DAMAGED)?;
        let session_timeout_ms = c.u64().ok_or(DAMAGED)?;
        let departed = c.u8().ok_or(DAMAGED)? != 0;
        let assigned = tps(c).ok_or(DAMAGED)?;
        let revoking = tps(c).ok_or(DAMAGED)?;
        let mut target = tps(c).ok_or(DAMAGED)?;
        if self.members.contains_key(&*id) {
            return Err(DAMAGED);
        }
        for tp in assigned.iter().chain(&revoking) {
            match self.view.partitions_of(tp.0) {
                Some(n) if tp.1 >= n => return Err("a partition its topic does not have"),
                // A topic deleted while the server was down: its partitions are given
                // back as usual, and never handed out again, so they need no holder
                // (whose slots grow to the partition number).
                None => continue,
                Some(_) => {}
            }
            if self.holder.contains(tp) {
                return Err("a partition held by two members");
            }
            self.holder.insert(*tp, &id);
        }
        // The target is only a starting point for the next one (`bump`).
        target.retain(|tp| self.view.partitions_of(tp.0).is_some_and(|n| tp.1 < n));
        let subscription = self
            .subscriptions
            .intern(&self.group, sub.clone(), None)
            .map_err(|_| "the server's cap on subscriptions is reached")?;
        let member = Member {
            id: Arc::clone(&id),
            instance_id,
            epoch,
            previous_epoch,
            subscription,
            session_timeout_ms,
            deadline_ms: now_ms.saturating_add(session_timeout_ms),
            departed,
            revoking_since: (!revoking.is_empty()).then_some(now_ms),
            assigned,
            revoking,
        };
        self.target.insert(id.to_string(), target);
        self.members.insert(id.to_string(), member);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::TopicMeta;
    use crate::groups::coordinator::Heartbeat;

    fn view() -> Arc<TopicsView> {
        let topics = vec![TopicMeta {
            name: "t".into(),
            id: format!("{:032x}", 1),
            partitions: 4,
        }];
        Arc::new(TopicsView::new(0, topics))
    }

    fn tally() -> Arc<SubscriptionTally> {
        Arc::new(SubscriptionTally::new(usize::MAX))
    }

    fn scope(who: &str) -> Scope {
        Scope {
            who: who.into(),
            shows: Arc::new(|name: &str| name == "t"),
            era: Default::default(),
        }
    }

    /// A group of one member subscribed with `sub`, which owns its partitions.
    fn group_of(sub: Subscription) -> Membership {
        let mut g = Membership::new("g", 1_000, view());
        let hb = Heartbeat {
            member_id: String::new(),
            member_epoch: 0,
            subscription: sub,
            instance_id: Some("i".into()),
            session_timeout_ms: 5_000,
            owned: Vec::new(),
        };
        g.heartbeat(hb, &view(), 0, || "m".into()).unwrap();
        g
    }

    #[test]
    fn a_scoped_pattern_is_restored_only_with_its_principals_scope() {
        let sub = crate::groups::subscription(Vec::new(), "t.*").unwrap();
        let g = group_of(sub.scoped(Some(scope("alice"))));
        let saved = g.saved();
        let none = Membership::restore("g", 1_000, view(), tally(), &saved, 0, &|_| None);
        assert!(none.is_err(), "a scoped pattern restored without its scope");
        let asked = std::sync::Mutex::new(Vec::new());
        let scope_of = |who: &str| {
            asked.lock().unwrap().push(who.to_string());
            Some(scope(who))
        };
        let r = Membership::restore("g", 1_000, view(), tally(), &saved, 9, &scope_of).unwrap();
        assert_eq!(*asked.lock().unwrap(), ["alice"]);
        let m = r.members().next().unwrap();
        let before = g.members().next().unwrap();
        assert_eq!(*m.subscription, *before.subscription);
        assert_eq!(
            (&*m.id, m.epoch, &m.assigned),
            (&*before.id, before.epoch, &before.assigned)
        );
        assert_eq!(m.instance_id.as_deref(), Some("i"));
        assert_eq!(m.deadline_ms, 9 + 5_000, "its session starts again");
        assert_eq!(r.holder(&(1, 0)), Some("m"));
    }

    #[test]
    fn damaged_bytes_restore_nothing_and_never_panic() {
        let sub = crate::groups::subscription(vec!["t".into()], "").unwrap();
        let saved = group_of(sub).saved();
        let whole = Membership::restore("g", 1_000, view(), tally(), &saved, 0, &|_| None);
        assert_eq!(
            whole.unwrap().members().count(),
            1,
            "the whole bytes restore"
        );
        for cut in 0..saved.len() {
            let r = Membership::restore("g", 1_000, view(), tally(), &saved[..cut], 0, &|_| None);
            assert!(r.is_err(), "restored from {cut} of {} bytes", saved.len());
        }
        let mut longer = saved.clone();
        longer.push(0);
        assert!(Membership::restore("g", 1_000, view(), tally(), &longer, 0, &|_| None).is_err());
        // Counts that claim more than the bytes hold (the subscriptions', after the
        // epoch; the first subscription's names', after its kind) allocate nothing big.
        for at in [8, 13] {
            let mut huge = saved.clone();
            huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            let r = Membership::restore("g", 1_000, view(), tally(), &huge, 0, &|_| None);
            assert!(r.is_err(), "count at {at}");
        }
        // An epoch no server reaches (hostile-sweep finding: i64::MAX wrapped).
        let mut far = saved.clone();
        far[..8].copy_from_slice(&i64::MAX.to_le_bytes());
        let r = Membership::restore("g", 1_000, view(), tally(), &far, 0, &|_| None);
        assert!(r.is_err());
        // A partition past its topic's count is refused, never allocated for: the
        // holders' slots grow to the partition number. The member owns all 4 of `t`;
        // its bytes end with assigned, revoking (no topic: 4 bytes) and target (one
        // topic of 4 partitions: 40 bytes), so its last assigned partition is at -48.
        let member = group_of(crate::groups::subscription(vec!["t".into()], "").unwrap());
        assert_eq!(member.members().next().unwrap().assigned.len(), 4);
        let bytes = member.saved();
        let last = bytes.len() - 40 - 4 - 4;
        assert_eq!(bytes[last..last + 4], 3u32.to_le_bytes());
        let mut wild = bytes.clone();
        wild[last..last + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let r = Membership::restore("g", 1_000, view(), tally(), &wild, 0, &|_| None);
        assert_eq!(r.err(), Some("a partition its topic does not have"));
    }
}
