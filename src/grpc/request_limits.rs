//! The largest request message each service accepts, and the error for one over it.
//!
//! tonic refuses an over-long message with OUT_OF_RANGE, which strom's API keeps for
//! offsets outside the log: a client following the contract could take a request it
//! made too large for an offset to reset. The budget layer (`budget/`), which reads
//! every message's length before tonic does, refuses it first with RESOURCE_EXHAUSTED
//! and says which limit and what to do; the Log service's own reader (`direct`) does
//! the same for the requests it reads.

use tonic::Status;

/// The largest message of a Fetch, Subscribe, reflection or health request: a name and
/// a few numbers. (The Log service reads Fetch and Subscribe itself, held until whole,
/// and charges them to no budget.)
pub const SMALL_REQUEST_BYTES: usize = 64 << 10;

/// Request size limits by service.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Log and Admin calls, and Publish: the server's `max_request_bytes`.
    pub max_request_bytes: usize,
    /// Groups calls (a commit of many offsets at most).
    pub groups: usize,
    /// Queues calls (an acknowledgement of many offsets at most).
    pub queues: usize,
}

impl RequestLimits {
    /// The limit for a call's path (`/package.Service/Method`).
    pub fn of(&self, path: &str) -> usize {
        if path.starts_with("/strom.v1.Groups/") {
            self.groups
        } else if path.starts_with("/strom.v1.Queues/") {
            self.queues
        } else if path.starts_with("/grpc.") || is_read(path) || names_only(path) {
            SMALL_REQUEST_BYTES
        } else {
            self.max_request_bytes
        }
    }
}

/// Whether `path` is an Exchanges call but Publish: names and a key, a few hundred
/// bytes.
fn names_only(path: &str) -> bool {
    path.starts_with("/strom.v1.Exchanges/") && path != "/strom.v1.Exchanges/Publish"
}

/// Whether `path` is a Fetch or a Subscribe.
fn is_read(path: &str) -> bool {
    path == "/strom.v1.Log/Fetch" || path == "/strom.v1.Log/Subscribe"
}

/// The refusal of a request message of `len` bytes over `limit`, for the call `path`.
pub fn too_large(len: usize, limit: usize, path: &str) -> Status {
    let what_to_do = if is_read(path) {
        "a fetch names a topic and a few numbers; check the request"
    } else if names_only(path) {
        "it names an exchange, a topic and a key; check the request"
    } else if ["/strom.v1.Log/", "/strom.v1.Admin/", "/strom.v1.Exchanges/"]
        .iter()
        .any(|service| path.starts_with(service))
    {
        "send less in one request, or raise the server's max_request_bytes"
    } else if path.starts_with("/grpc.") {
        "check the request"
    } else {
        "send it in several requests"
    };
    Status::resource_exhausted(format!(
        "the request message is {len} bytes, over the {limit} bytes this server accepts \
         for {path}: {what_to_do}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_has_its_limit() {
        let limits = RequestLimits {
            max_request_bytes: 64 << 20,
            groups: 16 << 20,
            queues: 1 << 20,
        };
        assert_eq!(limits.of("/strom.v1.Log/Produce"), 64 << 20);
        assert_eq!(limits.of("/strom.v1.Admin/CreateTopic"), 64 << 20);
        assert_eq!(limits.of("/strom.v1.Groups/CommitOffsets"), 16 << 20);
        assert_eq!(limits.of("/strom.v1.Queues/ShareStream"), 1 << 20);
        assert_eq!(
            limits.of("/grpc.health.v1.Health/Watch"),
            SMALL_REQUEST_BYTES
        );
        assert_eq!(limits.of("/strom.v1.Log/Fetch"), SMALL_REQUEST_BYTES);
        assert_eq!(limits.of("/strom.v1.Exchanges/Publish"), 64 << 20);
        assert_eq!(limits.of("/strom.v1.Exchanges/Bind"), SMALL_REQUEST_BYTES);
        let refused = too_large(5 << 20, 1 << 20, "/strom.v1.Queues/ShareAcknowledge");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("5242880"),
            "{}",
            refused.message()
        );
    }
}
