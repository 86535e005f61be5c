//! DescribeGroup: a group's state, its members, and per partition its committed offset
//! and lag, a page at a time. A whole description has no bound: 1,000 members each
//! naming 1,000 topics of 200 bytes made an answer of 203 MB that no client could read.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::member::Member;
use super::paging::{bad_token, partition_from, partition_token, Room};
use super::{loaded, topic_id, Groups, Subscription, TopicsView, Tp};
use crate::broker::page::Page;
use crate::error::Result;

/// About the most one page's entries take encoded, whatever `page_size` allows: under
/// the 4 MB that gRPC clients accept by default, with room for an estimate that is off.
pub const PAGE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub epoch: i64,
    pub topics: Vec<String>,
    pub pattern: String,
    pub assignment: BTreeMap<String, Vec<u32>>,
    pub revoking: BTreeMap<String, Vec<u32>>,
    pub session_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    pub committed: Option<u64>,
    pub high_watermark: u64,
    pub owner: Option<String>,
}

/// One page of a group's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    pub name: String,
    pub state: &'static str,
    pub epoch: i64,
    pub members: Vec<DescribedMember>,
    pub offsets: Vec<PartitionLag>,
    /// Where the next page goes on from; `None` on the last.
    pub next_page_token: Option<String>,
}

/// The entry a page goes on after: members come first, then partitions. As a token it
/// sorts as the entries do (clients check that tokens only go forward; see `paging`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum After {
    Start,
    Member(String),
    Partition(String, u32),
}

impl After {
    fn parse(token: Option<&str>) -> Result<After> {
        let Some(token) = token else {
            return Ok(After::Start);
        };
        let partition = partition_from(token).map(|(topic, p)| After::Partition(topic, p));
        let member = token.strip_prefix("m:").map(|id| After::Member(id.into()));
        partition
            .or(member)
            .ok_or_else(|| bad_token("DescribeGroup", token))
    }

    fn token(&self) -> String {
        match self {
            After::Start => String::new(),
            After::Member(id) => format!("m:{id}"),
            After::Partition(topic, p) => partition_token(topic, *p),
        }
    }
}

/// Partitions grouped by topic name, for a member's assignment.
fn by_name(view: &TopicsView, tps: &BTreeSet<Tp>) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (id, p) in tps {
        let name = view.name_of(*id).unwrap_or("(deleted topic)");
        out.entry(name.to_string()).or_default().push(*p);
    }
    out
}

fn described(view: &TopicsView, m: &Member) -> DescribedMember {
    let (topics, pattern) = match &*m.subscription {
        Subscription::Topics(t) => (t.iter().cloned().collect(), String::new()),
        Subscription::Pattern(pattern, _, _) => (Vec::new(), pattern.clone()),
    };
    DescribedMember {
        id: m.id.to_string(),
        instance_id: m.instance_id.clone(),
        epoch: m.epoch,
        topics,
        pattern,
        assignment: by_name(view, &m.assigned),
        revoking: by_name(view, &m.revoking),
        session_timeout_ms: m.session_timeout_ms,
    }
}

/// About its encoded size: its strings, and a few bytes of tags and numbers each.
fn member_bytes(m: &DescribedMember) -> usize {
    let names = |parts: &BTreeMap<String, Vec<u32>>| -> usize {
        parts.iter().map(|(t, ps)| t.len() + 8 + 5 * ps.len()).sum()
    };
    m.id.len()
        + m.instance_id.as_ref().map_or(0, String::len)
        + m.pattern.len()
        + 32
        + m.topics.iter().map(|t| t.len() + 3).sum::<usize>()
        + names(&m.assignment)
        + names(&m.revoking)
}

impl Groups {
    /// One page of a group's state, members, and per partition its committed offset
    /// and lag; `page.after` is the previous page's `next_page_token`, and `page.only`
    /// the topics it may show.
    pub async fn describe(&self, group: &str, page: &Page) -> Result<DescribedGroup> {
        let after = After::parse(page.after.as_deref())?;
        let (slot, mut guard) = self.lock(group, false).await?;
        let view = self.view();
        let loaded = loaded(&mut guard);
        self.store(&slot, loaded, false).await?;
        let committed = loaded.store.as_ref().map(|store| &store.offsets);
        let membership = &loaded.membership;
        let mut room = Room {
            entries: page.limit.max(1),
            bytes: PAGE_BYTES,
            taken: 0,
        };
        let mut last = after.clone();
        let mut full = false;
        let mut members = Vec::new();
        if let After::Start | After::Member(_) = &after {
            let from = match &after {
                After::Member(id) => Bound::Excluded(id.as_str()),
                _ => Bound::Unbounded,
            };
            for m in membership.members_from(from) {
                let m = described(&view, m);
                if !room.take(member_bytes(&m)) {
                    full = true;
                    break;
                }
                last = After::Member(m.id.clone());
                members.push(m);
            }
        }
        // Every partition of every subscribed topic, and of every topic with offsets,
        // walked by name from where the page starts until it is full.
        let (from_topic, from_partition) = match &after {
            After::Partition(topic, p) => (Bound::Included(topic.as_str()), Some((topic, *p))),
            _ => (Bound::Unbounded, None),
        };
        let mut offsets = Vec::new();
        // None when the members filled the page.
        let walked = (!full).then(|| view.topics_from(from_topic));
        // Topics the page does not show (the caller's access) are skipped here, so
        // that they take no room and no token names them.
        let shown = |name: &str| page.only.as_ref().is_none_or(|only| only(name));
        let topics = walked.into_iter().flatten().filter(|(name, id, _)| {
            (membership.subscribes(name) || committed.is_some_and(|c| c.has_topic(*id)))
                && shown(name)
        });
        'topics: for (name, _, _) in topics {
            let Ok(topic) = self.broker.topic(name) else {
                continue;
            };
            let id = topic_id(&topic.id)?;
            for partition in topic.partitions().iter() {
                if from_partition.is_some_and(|(t, p)| t == name && partition.id <= p) {
                    continue;
                }
                let Ok(bounds) = partition.offsets() else {
                    continue;
                };
                let tp = (id, partition.id);
                let lag = PartitionLag {
                    topic: name.to_string(),
                    partition: partition.id,
                    committed: committed.and_then(|c| c.offset(&tp)),
                    high_watermark: bounds.high_watermark,
                    owner: membership.holder(&tp).map(str::to_string),
                };
                // Tags, four numbers of up to ten bytes (-1 takes ten), two strings.
                let bytes = lag.topic.len() + lag.owner.as_ref().map_or(0, String::len) + 56;
                if !room.take(bytes) {
                    full = true;
                    break 'topics;
                }
                last = After::Partition(lag.topic.clone(), lag.partition);
                offsets.push(lag);
            }
        }
        Ok(DescribedGroup {
            name: group.to_string(),
            state: membership.state().as_str(),
            epoch: membership.epoch(),
            members,
            offsets,
            next_page_token: full.then(|| last.token()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn tokens_read_back_as_they_were_written() {
        for after in [
            After::Member("a:b:c".into()),
            After::Member(String::new()),
            After::Partition("t.x-1".into(), 7),
        ] {
            assert_eq!(After::parse(Some(&after.token())).unwrap(), after);
        }
        // In the order of the entries.
        let tokens: Vec<String> = [
            After::Member("a".into()),
            After::Member("b".into()),
            After::Partition("t".into(), 9),
            After::Partition("t".into(), 10),
            After::Partition("t-".into(), 0),
            After::Partition("t.x".into(), 0),
            After::Partition("u".into(), 0),
        ]
        .iter()
        .map(After::token)
        .collect();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
        for bad in ["", "x", "p:t", "p:t,x", "q:1"] {
            let err = After::parse(Some(bad)).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
        }
    }
}
