//! Listings sorted by name, a page at a time: a listing of every topic or group in one
//! answer has no bound, and could pass what a client accepts. A page goes on after the
//! last name the previous one held, so that names created or deleted in between are
//! seen or not, but none twice and none skipped that lived throughout.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Which part of a listing sorted by name to give.
#[derive(Debug, Clone)]
pub struct Page {
    /// The last name of the previous page, if this is not the first.
    pub after: Option<String>,
    /// At most this many entries (at least one).
    pub limit: usize,
}

/// A page's entries, and where the next page starts if there is one.
#[derive(Debug)]
pub struct Listed<T> {
    pub entries: Vec<T>,
    /// The last name looked at, when more follow it.
    pub next_after: Option<String>,
}

impl Page {
    /// The whole listing, for callers that want it all.
    pub fn all() -> Page {
        Page {
            after: None,
            limit: usize::MAX,
        }
    }

    /// The entries of `map` after `after`, in order.
    pub fn range<'a, V>(
        &self,
        map: &'a BTreeMap<String, V>,
    ) -> std::collections::btree_map::Range<'a, String, V> {
        match &self.after {
            Some(after) => map.range::<str, _>((Bound::Excluded(after.as_str()), Bound::Unbounded)),
            None => map.range::<str, _>(..),
        }
    }

    /// The first `limit` of `entries` (sorted by the name `name` gives), and the name to
    /// go on after if more follow.
    pub fn take<T>(
        &self,
        entries: impl Iterator<Item = T>,
        name: impl Fn(&T) -> &str,
    ) -> Listed<T> {
        let limit = self.limit.max(1);
        let mut entries: Vec<T> = entries.take(limit.saturating_add(1)).collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_after = match more {
            true => entries.last().map(|last| name(last).to_string()),
            false => None,
        };
        Listed {
            entries,
            next_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> BTreeMap<String, ()> {
        (0..n).map(|i| (format!("n{i:03}"), ())).collect()
    }

    /// Pages of any size list every name once, in order, and the last says so.
    #[test]
    fn pages_list_every_name_once() {
        let map = names(10);
        for limit in [1, 3, 5, 9, 10, 11] {
            let mut page = Page { after: None, limit };
            let mut seen = Vec::new();
            loop {
                let listed = page.take(page.range(&map).map(|(k, _)| k), |k| k);
                seen.extend(listed.entries.iter().map(|k| k.to_string()));
                match listed.next_after {
                    Some(after) => page.after = Some(after),
                    None => break,
                }
            }
            assert_eq!(
                seen,
                map.keys().cloned().collect::<Vec<_>>(),
                "limit {limit}"
            );
        }
    }

    #[test]
    fn a_page_goes_on_after_a_name_deleted_meanwhile() {
        let mut map = names(6);
        let page = Page {
            after: None,
            limit: 3,
        };
        let first = page.take(page.range(&map).map(|(k, _)| k.clone()), |k| k);
        assert_eq!(first.next_after.as_deref(), Some("n002"));
        map.remove("n002");
        map.remove("n003");
        let page = Page {
            after: first.next_after,
            limit: 3,
        };
        let second = page.take(page.range(&map).map(|(k, _)| k.clone()), |k| k);
        assert_eq!(second.entries, ["n004", "n005"]);
        assert_eq!(second.next_after, None);
    }

    #[test]
    fn a_limit_of_zero_gives_one_entry_so_that_paging_ends() {
        let map = names(2);
        let page = Page {
            after: None,
            limit: 0,
        };
        let listed = page.take(page.range(&map).map(|(k, _)| k), |k| k);
        assert_eq!(listed.entries.len(), 1);
        assert_eq!(listed.next_after.as_deref(), Some("n000"));
    }
}
