//! Every decoder of bytes that come from clients or from disk: produce validation, batch
//! prefixes and control markers, the records inside a batch (decompressed within a bound,
//! parsed, rebuilt as the log cleaner does), producer snapshots, aborted-transaction indexes,
//! committed offsets and transaction states. None may panic; what validation accepts must
//! hold up.
#![no_main]
use bytes::Bytes;
use flumen::log::producers::{AbortedTxn, ProducerTable};
use flumen::protocol::batch::{self, BatchPrefix};
use flumen::protocol::records;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(infos) = batch::validate_produce(data, 1 << 20) {
        let mut at = 0;
        for i in &infos {
            assert_eq!(i.start, at, "batches are back to back");
            let b = &data[i.start..i.start + i.len];
            let p = BatchPrefix::parse(b).expect("a validated batch has a valid prefix");
            assert_eq!(p.len, i.len);
            assert!(batch::crc_ok(b));
            at += i.len;
        }
        assert_eq!(at, data.len());
        let _ = records::keyless_records(data, &infos);
    }
    if data.len() >= batch::HEADER_BYTES {
        // What the cleaner does with a stored batch: its records, and the batch rebuilt from
        // all of them reads back the same.
        let count = batch::be_i32(data, batch::OFF_RECORDS_COUNT);
        let delta = batch::be_i32(data, batch::OFF_LAST_OFFSET_DELTA);
        if let Ok(body) = records::body(data) {
            if let Ok(recs) = records::parse(&body, count, delta) {
                let again = records::rebuild(data, &recs).expect("parsed records rebuild");
                let body2 = records::body(&again).expect("a rebuilt batch decompresses");
                let recs2 = records::parse(&body2, count, delta).expect("and parses");
                let raw = |rs: &[records::RawRecord<'_>]| -> Vec<Vec<u8>> {
                    rs.iter().map(|r| r.bytes.to_vec()).collect()
                };
                assert_eq!(raw(&recs), raw(&recs2));
            }
        }
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
