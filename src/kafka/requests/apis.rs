//! The APIs strom answers, by Kafka's key, and the versions of each it takes.

/// API keys, as Kafka numbers them.
pub mod key {
    pub const PRODUCE: i16 = 0;
    pub const FETCH: i16 = 1;
    pub const LIST_OFFSETS: i16 = 2;
    pub const METADATA: i16 = 3;
    pub const OFFSET_COMMIT: i16 = 8;
    pub const OFFSET_FETCH: i16 = 9;
    pub const FIND_COORDINATOR: i16 = 10;
    pub const JOIN_GROUP: i16 = 11;
    pub const HEARTBEAT: i16 = 12;
    pub const LEAVE_GROUP: i16 = 13;
    pub const SYNC_GROUP: i16 = 14;
    pub const DESCRIBE_GROUPS: i16 = 15;
    pub const LIST_GROUPS: i16 = 16;
    pub const SASL_HANDSHAKE: i16 = 17;
    pub const API_VERSIONS: i16 = 18;
    pub const CREATE_TOPICS: i16 = 19;
    pub const DELETE_TOPICS: i16 = 20;
    pub const DELETE_RECORDS: i16 = 21;
    pub const INIT_PRODUCER_ID: i16 = 22;
    pub const DESCRIBE_CONFIGS: i16 = 32;
    pub const ALTER_CONFIGS: i16 = 33;
    pub const SASL_AUTHENTICATE: i16 = 36;
    pub const CREATE_PARTITIONS: i16 = 37;
    pub const DELETE_GROUPS: i16 = 42;
    pub const OFFSET_DELETE: i16 = 47;
    pub const INCREMENTAL_ALTER_CONFIGS: i16 = 44;
}

/// One API strom answers: its key, the versions it takes, and the first flexible one.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    pub key: i16,
    pub min: i16,
    pub max: i16,
    pub first_flexible: i16,
}

pub const APIS: [Api; 26] = [
    Api {
        key: key::PRODUCE,
        min: 3,
        max: 12,
        first_flexible: 9,
    },
    Api {
        key: key::FETCH,
        min: 4,
        max: 12,
        first_flexible: 12,
    },
    Api {
        key: key::LIST_OFFSETS,
        min: 1,
        max: 6,
        first_flexible: 6,
    },
    Api {
        key: key::METADATA,
        min: 0,
        max: 12,
        first_flexible: 9,
    },
    Api {
        key: key::API_VERSIONS,
        min: 0,
        max: 3,
        first_flexible: 3,
    },
    Api {
        key: key::INIT_PRODUCER_ID,
        min: 0,
        max: 4,
        first_flexible: 2,
    },
    Api {
        key: key::OFFSET_COMMIT,
        min: 2,
        max: 8,
        first_flexible: 8,
    },
    Api {
        key: key::OFFSET_FETCH,
        min: 1,
        max: 7,
        first_flexible: 6,
    },
    Api {
        key: key::FIND_COORDINATOR,
        min: 0,
        max: 3,
        first_flexible: 3,
    },
    Api {
        key: key::JOIN_GROUP,
        min: 0,
        max: 7,
        first_flexible: 6,
    },
    Api {
        key: key::HEARTBEAT,
        min: 0,
        max: 4,
        first_flexible: 4,
    },
    Api {
        key: key::LEAVE_GROUP,
        min: 0,
        max: 4,
        first_flexible: 4,
    },
    Api {
        key: key::SYNC_GROUP,
        min: 0,
        max: 5,
        first_flexible: 4,
    },
    // Version 0 of the handshake is followed by bare SASL tokens, not requests: strom
    // takes version 1, which every client that asks ApiVersions first uses.
    Api {
        key: key::SASL_HANDSHAKE,
        min: 1,
        max: 1,
        first_flexible: i16::MAX,
    },
    Api {
        key: key::SASL_AUTHENTICATE,
        min: 0,
        max: 2,
        first_flexible: 2,
    },
    Api {
        key: key::CREATE_TOPICS,
        min: 2,
        max: 7,
        first_flexible: 5,
    },
    Api {
        key: key::DELETE_TOPICS,
        min: 1,
        max: 6,
        first_flexible: 4,
    },
    Api {
        key: key::DELETE_RECORDS,
        min: 0,
        max: 2,
        first_flexible: 2,
    },
    Api {
        key: key::CREATE_PARTITIONS,
        min: 0,
        max: 3,
        first_flexible: 2,
    },
    Api {
        key: key::DESCRIBE_GROUPS,
        min: 0,
        max: 5,
        first_flexible: 5,
    },
    Api {
        key: key::LIST_GROUPS,
        min: 0,
        max: 4,
        first_flexible: 3,
    },
    Api {
        key: key::DELETE_GROUPS,
        min: 0,
        max: 2,
        first_flexible: 2,
    },
    // Kafka has only version 0, not flexible.
    Api {
        key: key::OFFSET_DELETE,
        min: 0,
        max: 0,
        first_flexible: i16::MAX,
    },
    // Version 0 answers with `is_default` where later ones have a config's source.
    Api {
        key: key::DESCRIBE_CONFIGS,
        min: 1,
        max: 4,
        first_flexible: 4,
    },
    Api {
        key: key::ALTER_CONFIGS,
        min: 0,
        max: 2,
        first_flexible: 2,
    },
    Api {
        key: key::INCREMENTAL_ALTER_CONFIGS,
        min: 0,
        max: 1,
        first_flexible: 1,
    },
];

pub fn api(key: i16) -> Option<&'static Api> {
    APIS.iter().find(|api| api.key == key)
}
