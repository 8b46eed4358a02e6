//! A request frame (after its size prefix) down the path the broker takes: header and version
//! checks, the body decoded as the named API, and a produce request's record sets validated.
#![no_main]
use bytes::Bytes;
use kafka_protocol::messages::RequestKind;
use libfuzzer_sys::fuzz_target;

// The broker's allocator, so the target sees what the broker does with a hostile length.
#[global_allocator]
static ALLOC: flumen::alloc::BrokerAllocator = flumen::alloc::BrokerAllocator;

fuzz_target!(|data: &[u8]| {
    let mut frame = Bytes::copy_from_slice(data);
    let Ok((key, version, _, _)) = flumen::protocol::parse_request_header(&mut frame) else {
        return;
    };
    if let Ok(RequestKind::Produce(p)) = RequestKind::decode(key, &mut frame, version) {
        for t in &p.topic_data {
            for part in &t.partition_data {
                if let Some(records) = &part.records {
                    if let Ok(infos) = flumen::protocol::batch::validate_produce(records, 1 << 20) {
                        for i in infos {
                            let b = &records[i.start..i.start + i.len];
                            assert!(flumen::protocol::batch::crc_ok(b));
                        }
                    }
                }
            }
        }
    }
});
