//! The topic administration requests: CreateTopics, DeleteTopics, CreatePartitions,
//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.

use super::{Partitions, Topic};
use crate::kafka::wire::{Decoded, Reader};

/// One topic of a CreateTopics request.
#[derive(Debug)]
pub struct NewTopic {
    pub name: String,
    /// -1: the server's default.
    pub partitions: i32,
    /// -1: the server's default.
    pub replication_factor: i16,
    /// Each partition's replicas, by broker id, if the client chose them.
    pub assignments: Vec<(i32, Vec<i32>)>,
    /// Config keys and values (null: the default).
    pub configs: Vec<(String, Option<String>)>,
}

#[derive(Debug)]
pub struct CreateTopics {
    pub topics: Vec<NewTopic>,
    pub validate_only: bool,
}

/// A CreateTopics request (versions 2 to 7). Topics, assignments and configs count
/// against `MAX_PARTITIONS_PER_REQUEST`: each costs far more than its bytes.
pub fn create_topics(r: &mut Reader) -> Decoded<CreateTopics> {
    let mut count = Partitions::new();
    let topics = r.array("topics", |r| {
        count.add(1)?;
        let name = r.string("a topic name")?;
        let partitions = r.i32()?;
        let replication_factor = r.i16()?;
        let assignments = r.array("assignments", |r| {
            count.add(1)?;
            let index = r.i32()?;
            let brokers = r.array("broker ids", |r| r.i32())?;
            r.tags()?;
            Ok((index, brokers))
        })?;
        let configs = r.array("configs", |r| {
            count.add(1)?;
            let key = r.string("a config name")?;
            let value = r.nullable_string("a config value")?;
            r.tags()?;
            Ok((key, value))
        })?;
        r.tags()?;
        Ok(NewTopic {
            name,
            partitions,
            replication_factor,
            assignments,
            configs,
        })
    })?;
    let _timeout_ms = r.i32()?;
    let validate_only = r.bool()?;
    r.tags()?;
    Ok(CreateTopics {
        topics,
        validate_only,
    })
}

/// One topic of a CreatePartitions request.
#[derive(Debug)]
pub struct MorePartitions {
    pub name: String,
    /// The count wanted, in all.
    pub count: i32,
    /// The new partitions' replicas, by broker id, if the client chose them.
    pub assignments: Option<Vec<Vec<i32>>>,
}

/// A CreatePartitions request (versions 0 to 3) and its `validate_only`. Topics and
/// assignments count against `MAX_PARTITIONS_PER_REQUEST`.
pub fn create_partitions(r: &mut Reader) -> Decoded<(Vec<MorePartitions>, bool)> {
    let mut count = Partitions::new();
    let topics = r.array("topics", |r| {
        count.add(1)?;
        let name = r.string("a topic name")?;
        let wanted = r.i32()?;
        let assignments = r.nullable_array("assignments", |r| {
            count.add(1)?;
            let brokers = r.array("broker ids", |r| r.i32())?;
            r.tags()?;
            Ok(brokers)
        })?;
        r.tags()?;
        Ok(MorePartitions {
            name,
            count: wanted,
            assignments,
        })
    })?;
    let _timeout_ms = r.i32()?;
    let validate_only = r.bool()?;
    r.tags()?;
    Ok((topics, validate_only))
}

/// A DeleteRecords request (versions 0 to 2): each topic's partitions and the offset
/// below which to delete (-1: the high watermark). Its timeout is not needed: strom
/// answers once the records are deleted. Partitions count against
/// `MAX_PARTITIONS_PER_REQUEST`.
pub fn delete_records(r: &mut Reader) -> Decoded<Vec<Topic<(i32, i64)>>> {
    let topics = super::topics(r, |r| Ok((r.i32()?, r.i64()?)))?;
    let _timeout_ms = r.i32()?;
    r.tags()?;
    Ok(topics)
}

/// A topic to delete: by name, or (version 6) by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Doomed {
    Name(String),
    Id([u8; 16]),
}

/// A DeleteTopics request (versions 1 to 6).
pub fn delete_topics(r: &mut Reader, version: i16) -> Decoded<Vec<Doomed>> {
    let mut count = Partitions::new();
    let topics = match version >= 6 {
        true => r.array("topics", |r| {
            count.add(1)?;
            let name = r.nullable_string("a topic name")?;
            let id = r.uuid()?;
            r.tags()?;
            Ok(match name {
                Some(name) => Doomed::Name(name),
                None => Doomed::Id(id),
            })
        })?,
        false => r.array("topic names", |r| {
            count.add(1)?;
            Ok(Doomed::Name(r.string("a topic name")?))
        })?,
    };
    let _timeout_ms = r.i32()?;
    r.tags()?;
    Ok(topics)
}

/// A resource a config request names: its type (2 a topic, 4 a broker), its name, and
/// the config keys and values (and, for IncrementalAlterConfigs, operations) given.
#[derive(Debug)]
pub struct ConfigResource<T> {
    pub kind: i8,
    pub name: String,
    pub configs: T,
}

/// A DescribeConfigs request (versions 1 to 4): each resource with the keys asked
/// for (None: all).
pub fn describe_configs(
    r: &mut Reader,
    version: i16,
) -> Decoded<Vec<ConfigResource<Option<Vec<String>>>>> {
    let mut count = Partitions::new();
    let resources = r.array("resources", |r| {
        count.add(1)?;
        let kind = r.i8()?;
        let name = r.string("a resource name")?;
        let configs = r.nullable_array("config keys", |r| {
            count.add(1)?;
            r.string("a config key")
        })?;
        r.tags()?;
        Ok(ConfigResource {
            kind,
            name,
            configs,
        })
    })?;
    let _include_synonyms = r.bool()?;
    if version >= 3 {
        let _include_documentation = r.bool()?;
    }
    r.tags()?;
    Ok(resources)
}

/// One config change: its key, Kafka's operation (0 set, 1 delete, 2 append, 3
/// subtract; AlterConfigs sets), and its value.
pub type ConfigChange = (String, i8, Option<String>);

/// An AlterConfigs (`incremental` false, versions 0 to 2) or IncrementalAlterConfigs
/// (versions 0 to 1) request, and its `validate_only`.
pub fn alter_configs(
    r: &mut Reader,
    incremental: bool,
) -> Decoded<(Vec<ConfigResource<Vec<ConfigChange>>>, bool)> {
    let mut count = Partitions::new();
    let resources = r.array("resources", |r| {
        count.add(1)?;
        let kind = r.i8()?;
        let name = r.string("a resource name")?;
        let configs = r.array("configs", |r| {
            count.add(1)?;
            let key = r.string("a config key")?;
            let operation = if incremental { r.i8()? } else { 0 };
            let value = r.nullable_string("a config value")?;
            r.tags()?;
            Ok((key, operation, value))
        })?;
        r.tags()?;
        Ok(ConfigResource {
            kind,
            name,
            configs,
        })
    })?;
    let validate_only = r.bool()?;
    r.tags()?;
    Ok((resources, validate_only))
}
