//! Record-batch and frame codec throughput: build and parse one batch of 1,000 records of
//! 1 KiB values (about 1 MiB), and frame it as a produce request. Criterion prints throughput
//! over the batch's bytes in decimal MB/s. Run: `cargo bench -p keel-client --bench codec`.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use keel_wire::messages::{Acks, ProduceRequest};
use keel_wire::record_batch::Header;
use keel_wire::{
    Frame, FrameDecoder, Limits, Record, RecordBatchBuilder, RecordBatchView, Request,
};

const RECORDS: usize = 1_000;
const VALUE_BYTES: usize = 1024;

fn build_batch(limits: &Limits, keys: &[[u8; 16]], value: &[u8]) -> Bytes {
    let headers = [Header {
        key: b"trace",
        value: Some(b"0123456789abcdef"),
    }];
    let mut builder = RecordBatchBuilder::new(limits, limits.max_record_batch_bytes);
    for (index, key) in keys.iter().enumerate() {
        let record = Record {
            timestamp_ms: 1_700_000_000_000 + index as i64,
            key: Some(key),
            value: Some(value),
            headers: &headers,
        };
        builder
            .append(&record)
            .expect("1,000 KiB records fit a 4 MiB batch");
    }
    builder.finish().expect("the batch has records")
}

fn codec(criterion: &mut Criterion) {
    let limits = Limits::default();
    let keys: Vec<[u8; 16]> = (0..RECORDS as u128)
        .map(|index| index.to_le_bytes())
        .collect();
    let value: Vec<u8> = (0..VALUE_BYTES).map(|index| (index * 31) as u8).collect();
    let batch = build_batch(&limits, &keys, &value);

    let mut group = criterion.benchmark_group("record_batch_1000x1KiB");
    group.throughput(Throughput::BytesDecimal(batch.len() as u64));
    group.bench_function("build", |bench| {
        bench.iter(|| build_batch(&limits, black_box(&keys), black_box(&value)))
    });
    group.bench_function("parse", |bench| {
        bench.iter(|| {
            RecordBatchView::parse_within(black_box(batch.clone()), &limits).expect("valid batch")
        })
    });
    group.bench_function("parse_and_iterate", |bench| {
        bench.iter(|| {
            let view = RecordBatchView::parse(black_box(batch.clone())).expect("valid batch");
            let records = view.decode().expect("valid records");
            records
                .iter()
                .map(|record| record.value.map_or(0, <[u8]>::len))
                .sum::<usize>()
        })
    });
    group.finish();

    let request = Request::Produce(ProduceRequest {
        topic: "bench".into(),
        partition: 0,
        acks: Acks::Committed,
        timeout_ms: 30_000,
    });
    let frame = Frame::new(request, batch.clone());
    let encoded = frame.to_bytes().expect("frame encodes");
    let decoder = FrameDecoder::new(limits.max_request_bytes);
    let mut group = criterion.benchmark_group("frame_1MiB_produce");
    group.throughput(Throughput::BytesDecimal(encoded.len() as u64));
    group.bench_function("encode", |bench| {
        let mut out = BytesMut::with_capacity(encoded.len());
        bench.iter(|| {
            out.clear();
            frame.encode(&mut out).expect("frame encodes");
        })
    });
    group.bench_function("decode", |bench| {
        bench.iter(|| {
            Frame::<Request>::decode(&mut black_box(encoded.clone()), limits.max_request_bytes)
                .expect("valid frame")
        })
    });
    // Includes copying the frame into a receive buffer, as a stream reader does.
    group.bench_function("decode_incremental", |bench| {
        bench.iter(|| {
            let mut buffer = BytesMut::from(&encoded[..]);
            decoder
                .decode::<Request>(&mut buffer)
                .expect("valid frame")
                .expect("whole frame")
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
