//! Listings sorted by name, a page at a time: a listing of every topic or group in one
//! answer has no bound, and could pass what a client accepts. A page goes on after the
//! last name the previous one held, so that names created or deleted in between are
//! seen or not, but none twice and none skipped that lived throughout.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// Whether a listing shows a name.
pub type Visible = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Which part of a listing sorted by name to give.
#[derive(Clone)]
pub struct Page {
    /// The last name of the previous page, if this is not the first.
    pub after: Option<String>,
    /// At most this many entries (at least one).
    pub limit: usize,
    /// Only the names this shows (the caller's access, `grpc/auth/access.rs`); None
    /// shows all. Names hidden are skipped before the limit counts, so a page is as
    /// full as the names shown allow.
    pub only: Option<Visible>,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("after", &self.after)
            .field("limit", &self.limit)
            .field("only", &self.only.is_some())
            .finish()
    }
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
            only: None,
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
        let shown = |entry: &T| self.only.as_ref().is_none_or(|only| only(name(entry)));
        let mut entries: Vec<T> = entries
            .filter(shown)
            .take(limit.saturating_add(1))
            .collect();
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
            let mut page = Page {
                after: None,
                limit,
                only: None,
            };
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

    /// Hidden names are skipped before the limit counts: pages are full, and paging
    /// still ends.
    #[test]
    fn hidden_names_are_skipped_before_the_limit() {
        let map = names(10);
        let mut page = Page {
            after: None,
            limit: 2,
            only: Some(Arc::new(|name: &str| name.ends_with(['1', '4', '5', '9']))),
        };
        let mut pages = Vec::new();
        loop {
            let listed = page.take(page.range(&map).map(|(k, _)| k), |k| k);
            pages.push(
                listed
                    .entries
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>(),
            );
            match listed.next_after {
                Some(after) => page.after = Some(after),
                None => break,
            }
        }
        assert_eq!(pages, [vec!["n001", "n004"], vec!["n005", "n009"]]);
    }

    #[test]
    fn a_page_goes_on_after_a_name_deleted_meanwhile() {
        let mut map = names(6);
        let page = Page {
            after: None,
            limit: 3,
            only: None,
        };
        let first = page.take(page.range(&map).map(|(k, _)| k.clone()), |k| k);
        assert_eq!(first.next_after.as_deref(), Some("n002"));
        map.remove("n002");
        map.remove("n003");
        let page = Page {
            after: first.next_after,
            limit: 3,
            only: None,
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
            only: None,
        };
        let listed = page.take(page.range(&map).map(|(k, _)| k), |k| k);
        assert_eq!(listed.entries.len(), 1);
        assert_eq!(listed.next_after.as_deref(), Some("n000"));
    }
}
