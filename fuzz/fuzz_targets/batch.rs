//! Every decoder of bytes that come from clients or from disk: produce validation, batch
//! prefixes and control markers, producer snapshots, aborted-transaction indexes, committed
//! offsets and transaction states. None may panic; what validation accepts must hold up.
#![no_main]
use bytes::Bytes;
use flumen::log::producers::{AbortedTxn, ProducerTable};
use flumen::protocol::batch::{self, BatchPrefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(infos) = batch::validate_produce(data, 1 << 20) {
        let mut at = 0;
        for i in infos {
            assert_eq!(i.start, at, "batches are back to back");
            let b = &data[i.start..i.start + i.len];
            let p = BatchPrefix::parse(b).expect("a validated batch has a valid prefix");
            assert_eq!(p.len, i.len);
            assert!(batch::crc_ok(b));
            at += i.len;
        }
        assert_eq!(at, data.len());
    }
    let _ = batch::control_marker(data);
    if let Some(p) = BatchPrefix::parse(data) {
        assert!(p.len >= batch::HEADER_BYTES);
    }
    if let Some(t) = ProducerTable::decode(data) {
        assert_eq!(ProducerTable::decode(&t.encode()), Some(t));
    }
    if let Some(list) = AbortedTxn::decode_all(data) {
        assert_eq!(AbortedTxn::encode_all(&list), data);
    }
    let bytes = Bytes::copy_from_slice(data);
    let _ = flumen::coordinator::group::offsets::decode_key(bytes.clone());
    let _ = flumen::coordinator::group::offsets::decode_value(bytes.clone());
    let _ = flumen::coordinator::txn::decode_key(bytes.clone());
    if let Some(m) = flumen::coordinator::txn::decode_value(bytes) {
        assert_eq!(
            flumen::coordinator::txn::decode_value(flumen::coordinator::txn::encode_value(&m)),
            Some(m)
        );
    }
});
