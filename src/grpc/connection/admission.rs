//! Connections per client address (`max_connections_per_address`), over the gRPC and
//! the Kafka listeners together, and the count of connections refused a place.
//!
//! `max_connections` keeps the log its file descriptors, but on its own it lets one
//! host (a client in a reconnect loop, a pool sized wrong, or an attack) take every
//! place, and then no other client can connect at all. Past
//! `max_connections_per_address` open connections from one address, the next is
//! closed as soon as it is accepted, as one past `max_connections` is. An IPv6 address
//! counts as its /64 network, as for quotas: a host is commonly given a whole /64.
//! Clients behind one NAT or proxy share their address's places. A client with many
//! /64s (a /48 from a tunnel broker is 65,536 of them) is as many addresses: this
//! bounds a host that misbehaves, not an attacker with a network of its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Why a connection was closed as soon as it was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The server had `max_connections` open.
    MaxConnections,
    /// Its address had `max_connections_per_address` open.
    PerAddress,
    /// A quarter of `max_connections` had not authenticated yet (Kafka's listener).
    Unauthenticated,
}

impl Refused {
    pub const ALL: [Refused; 3] = [
        Refused::MaxConnections,
        Refused::PerAddress,
        Refused::Unauthenticated,
    ];

    /// The metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::PerAddress => "per_address",
            Refused::Unauthenticated => "unauthenticated",
        }
    }
}

/// The connections open per address, shared by the server's listeners.
#[derive(Debug, Default)]
pub struct Admission {
    /// 0: no limit (nothing is counted).
    max_per_address: usize,
    /// Only addresses with connections open: an entry goes with its last connection.
    open: Mutex<HashMap<IpAddr, usize>>,
    refused: [AtomicU64; 3],
}

/// A connection's place among its address's, given back when it is dropped.
#[derive(Debug)]
pub struct AddressPlace(Option<(Arc<Admission>, IpAddr)>);

impl Admission {
    /// At most `max_per_address` connections open from one address (0: any number).
    pub fn new(max_per_address: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_per_address,
            ..Default::default()
        })
    }

    pub fn max_per_address(&self) -> usize {
        self.max_per_address
    }

    /// A place for a connection from `peer`, unless its address has
    /// `max_per_address` open (counted as refused then). A peer the system could not
    /// tell is not counted.
    pub fn take(self: &Arc<Self>, peer: Option<IpAddr>) -> Option<AddressPlace> {
        let (max @ 1.., Some(peer)) = (self.max_per_address, peer) else {
            return Some(AddressPlace(None));
        };
        let network = network_of(peer);
        let mut open = lock(&self.open);
        let count = open.entry(network).or_default();
        if *count >= max {
            drop(open);
            self.refuse(Refused::PerAddress);
            return None;
        }
        *count += 1;
        Some(AddressPlace(Some((Arc::clone(self), network))))
    }

    /// Counts a connection closed as soon as it was accepted.
    pub fn refuse(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections refused so far, for each reason.
    pub fn refused(&self) -> [(Refused, u64); 3] {
        Refused::ALL.map(|why| (why, self.refused[why as usize].load(Ordering::Relaxed)))
    }

    /// Addresses with connections open now.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        lock(&self.open).len()
    }
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        if let Some((admission, network)) = self.0.take() {
            let mut open = lock(&admission.open);
            if let Some(count) = open.get_mut(&network) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&network);
                }
            }
        }
    }
}

/// The address a client is known by: an IPv4 address, or the /64 network of an IPv6
/// one (a host is commonly given a whole /64, and could otherwise be as many clients
/// as it has addresses).
pub fn network_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_gets_its_places_back_and_others_are_not_counted_with_it() {
        let admission = Admission::new(2);
        let a = [
            admission.take(ip("10.0.0.1")),
            admission.take(ip("10.0.0.1")),
        ];
        assert!(a.iter().all(Option::is_some));
        assert!(admission.take(ip("10.0.0.1")).is_none());
        // The same /64: the same client.
        let b = admission.take(ip("2001:db8::1")).unwrap();
        let b2 = admission.take(ip("2001:db8::2")).unwrap();
        assert!(admission.take(ip("2001:db8::3")).is_none());
        assert!(admission.take(ip("2001:db8:0:1::1")).is_some());
        assert!(admission.take(ip("10.0.0.2")).is_some());
        assert_eq!(admission.refused()[1], (Refused::PerAddress, 2));
        drop(a);
        assert!(admission.take(ip("10.0.0.1")).is_some());
        drop((b, b2));
        // Entries go with their last connection: the map holds open addresses only.
        assert_eq!(admission.addresses(), 0);
        // An address the system could not tell is not held back.
        let unknown: Vec<_> = (0..5).map(|_| admission.take(None)).collect();
        assert!(unknown.iter().all(Option::is_some));
    }

    #[test]
    fn without_a_limit_nothing_is_counted() {
        let admission = Admission::new(0);
        let held: Vec<_> = (0..100).map(|_| admission.take(ip("10.0.0.1"))).collect();
        assert!(held.iter().all(Option::is_some));
        assert_eq!(admission.addresses(), 0);
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_one_its_ipv4_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(network_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            network_of(ip("2001:db8:1:2:bbbb::9")),
            network_of(ip("2001:db8:1:2:aaaa::1"))
        );
        assert_ne!(network_of(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(network_of(ip("::ffff:10.0.0.7")), ip("10.0.0.7"));
        assert_eq!(network_of(ip("10.0.0.7")), ip("10.0.0.7"));
    }
}
