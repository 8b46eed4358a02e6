//! Request versions that Kafka 3.9 still answers but the generated protocol crate no longer
//! carries (Kafka 4.0 dropped them): OffsetCommit v0-v1 and DescribeConfigs v0. Old clients
//! still send them whatever they are told (Go's Sarama 1.22 commits with v1 and lists topics'
//! configs with v0). Their layouts are plain (no tagged fields, no compact types), so they are
//! read into the same request types the handlers take, and answered by hand.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::describe_configs_request::{
    DescribeConfigsRequest, DescribeConfigsResource,
};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;

/// Why a legacy request could not be read.
pub type Malformed = String;

struct Reader<'a>(&'a mut Bytes);

impl Reader<'_> {
    fn need(&self, n: usize, what: &str) -> Result<(), Malformed> {
        if self.0.remaining() < n {
            return Err(format!(
                "{what}: {n} bytes needed, {} left",
                self.0.remaining()
            ));
        }
        Ok(())
    }
    fn i8(&mut self, what: &str) -> Result<i8, Malformed> {
        self.need(1, what)?;
        Ok(self.0.get_i8())
    }
    fn i32(&mut self, what: &str) -> Result<i32, Malformed> {
        self.need(4, what)?;
        Ok(self.0.get_i32())
    }
    fn i64(&mut self, what: &str) -> Result<i64, Malformed> {
        self.need(8, what)?;
        Ok(self.0.get_i64())
    }
    fn nullable_string(&mut self, what: &str) -> Result<Option<StrBytes>, Malformed> {
        self.need(2, what)?;
        let n = self.0.get_i16();
        if n < 0 {
            return Ok(None);
        }
        self.need(n as usize, what)?;
        let b = self.0.split_to(n as usize);
        StrBytes::from_utf8(b)
            .map(Some)
            .map_err(|_| format!("{what}: not UTF-8"))
    }
    fn string(&mut self, what: &str) -> Result<StrBytes, Malformed> {
        self.nullable_string(what)?
            .ok_or_else(|| format!("{what}: null where a string is required"))
    }
    /// An array's length (-1: null); each element is at least `min_elem` bytes, so a length
    /// the rest of the request cannot hold is refused before anything is allocated.
    fn len(&mut self, what: &str, min_elem: usize) -> Result<Option<usize>, Malformed> {
        let n = self.i32(what)?;
        if n < 0 {
            return Ok(None);
        }
        self.need(n as usize * min_elem, what)?;
        Ok(Some(n as usize))
    }
    fn done(&self, what: &str) -> Result<(), Malformed> {
        if self.0.has_remaining() {
            return Err(format!("{what}: {} bytes left over", self.0.remaining()));
        }
        Ok(())
    }
}

/// OffsetCommit v0 (group, topics) and v1 (with generation, member and a commit timestamp
/// per partition, which Kafka 3.9 ignores too) as the v2 request type.
pub fn offset_commit(version: i16, body: &mut Bytes) -> Result<OffsetCommitRequest, Malformed> {
    let mut r = Reader(body);
    let group_id = r.string("group id")?;
    let (generation, member_id) = if version >= 1 {
        (r.i32("generation")?, r.string("member id")?)
    } else {
        (-1, StrBytes::default())
    };
    let mut topics = Vec::new();
    for _ in 0..r.len("topics", 6)?.unwrap_or(0) {
        let name = r.string("topic")?;
        let mut partitions = Vec::new();
        for _ in 0..r.len("partitions", 14)?.unwrap_or(0) {
            let index = r.i32("partition")?;
            let offset = r.i64("offset")?;
            if version >= 1 {
                r.i64("commit timestamp")?;
            }
            let metadata = r.nullable_string("metadata")?;
            partitions.push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(index)
                    .with_committed_offset(offset)
                    .with_committed_metadata(metadata),
            );
        }
        topics.push(
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(name))
                .with_partitions(partitions),
        );
    }
    r.done("OffsetCommit")?;
    Ok(OffsetCommitRequest::default()
        .with_group_id(GroupId(group_id))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member_id)
        .with_topics(topics))
}

/// The OffsetCommit v0/v1 answer body: per topic, per partition, an error code.
pub fn offset_commit_response(topics: &[(StrBytes, Vec<(i32, i16)>)]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(topics.len() as i32);
    for (name, parts) in topics {
        put_string(&mut b, name);
        b.put_i32(parts.len() as i32);
        for (index, code) in parts {
            b.put_i32(*index);
            b.put_i16(*code);
        }
    }
    b
}

/// DescribeConfigs v0 (v1 without include_synonyms) as the v1 request type.
pub fn describe_configs(body: &mut Bytes) -> Result<DescribeConfigsRequest, Malformed> {
    let mut r = Reader(body);
    let mut resources = Vec::new();
    for _ in 0..r.len("resources", 7)?.unwrap_or(0) {
        let kind = r.i8("resource type")?;
        let name = r.string("resource name")?;
        let keys = match r.len("config names", 2)? {
            None => None,
            Some(n) => Some(
                (0..n)
                    .map(|_| r.string("config name"))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        resources.push(
            DescribeConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(name)
                .with_configuration_keys(keys),
        );
    }
    r.done("DescribeConfigs")?;
    Ok(DescribeConfigsRequest::default().with_resources(resources))
}

/// One config of a DescribeConfigs v0 answer.
pub struct ConfigV0 {
    pub name: String,
    pub value: String,
    pub read_only: bool,
    pub is_default: bool,
}

/// One resource of a DescribeConfigs v0 answer.
pub struct ResourceV0 {
    pub error_code: i16,
    pub error_message: Option<String>,
    pub resource_type: i8,
    pub resource_name: String,
    pub configs: Vec<ConfigV0>,
}

/// The DescribeConfigs v0 answer body.
pub fn describe_configs_response(results: &[ResourceV0]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(0); // throttle time
    b.put_i32(results.len() as i32);
    for r in results {
        b.put_i16(r.error_code);
        put_nullable(&mut b, r.error_message.as_deref());
        b.put_i8(r.resource_type);
        put_string(&mut b, &r.resource_name);
        b.put_i32(r.configs.len() as i32);
        for c in &r.configs {
            put_string(&mut b, &c.name);
            put_nullable(&mut b, Some(&c.value));
            b.put_u8(c.read_only as u8);
            b.put_u8(c.is_default as u8);
            b.put_u8(0); // not sensitive
        }
    }
    b
}

fn put_string(b: &mut BytesMut, s: &str) {
    put_nullable(b, Some(s));
}

fn put_nullable(b: &mut BytesMut, s: Option<&str>) {
    match s {
        None => b.put_i16(-1),
        Some(s) => {
            let s = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
            b.put_i16(s.len() as i16);
            b.put_slice(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_commit_v1_reads_into_the_current_request() {
        let mut b = BytesMut::new();
        put_string(&mut b, "g");
        b.put_i32(3);
        put_string(&mut b, "m-1");
        b.put_i32(1);
        put_string(&mut b, "t");
        b.put_i32(1);
        b.put_i32(2);
        b.put_i64(40);
        b.put_i64(-1);
        put_nullable(&mut b, None);
        let req = offset_commit(1, &mut b.freeze()).unwrap();
        assert_eq!(req.group_id.0.as_str(), "g");
        assert_eq!(req.generation_id_or_member_epoch, 3);
        assert_eq!(req.member_id.as_str(), "m-1");
        let p = &req.topics[0].partitions[0];
        assert_eq!((p.partition_index, p.committed_offset), (2, 40));
        // Short, or with bytes left over, or an array longer than the request: refused.
        let mut short = Bytes::from_static(&[0, 1, b'g', 0, 0]);
        assert!(offset_commit(1, &mut short).is_err());
        let mut huge = BytesMut::new();
        put_string(&mut huge, "g");
        huge.put_i32(i32::MAX);
        assert!(offset_commit(0, &mut huge.freeze()).is_err());
    }

    #[test]
    fn describe_configs_v0_reads_and_answers() {
        let mut b = BytesMut::new();
        b.put_i32(1);
        b.put_i8(2);
        put_string(&mut b, "t");
        b.put_i32(-1);
        let req = describe_configs(&mut b.freeze()).unwrap();
        assert_eq!(req.resources[0].resource_name.as_str(), "t");
        assert!(req.resources[0].configuration_keys.is_none());
        let out = describe_configs_response(&[ResourceV0 {
            error_code: 0,
            error_message: None,
            resource_type: 2,
            resource_name: "t".into(),
            configs: vec![ConfigV0 {
                name: "a".into(),
                value: "1".into(),
                read_only: false,
                is_default: false,
            }],
        }]);
        let want: &[u8] = &[
            0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 255, 255, 2, 0, 1, b't', 0, 0, 0, 1, 0, 1, b'a', 0, 1,
            b'1', 0, 0, 0,
        ];
        assert_eq!(&out[..], want);
    }
}
