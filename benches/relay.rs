//! The relay's per-message work: walking message boundaries in what Postgres
//! sends (many small DataRows, as in pgbench -S and wide scans) and in what
//! clients send.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use thermocline::protocol::{FrameScanner, Step, put_message};

/// One buffer of `rows` DataRows of `width` bytes, closed by CommandComplete
/// and ReadyForQuery, as Postgres sends a result.
fn result_set(rows: usize, width: usize) -> Vec<u8> {
    let mut out = Vec::new();
    put_message(
        &mut out,
        b'T',
        b"\0\x01aid\0\0\0\0\0\0\x01\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0",
    );
    let row: Vec<u8> = [
        &[0u8, 1][..],
        &(width as u32).to_be_bytes(),
        &vec![b'7'; width],
    ]
    .concat();
    for _ in 0..rows {
        put_message(&mut out, b'D', &row);
    }
    put_message(&mut out, b'C', b"SELECT 1\0");
    put_message(&mut out, b'Z', b"I");
    out
}

/// Scans `buf` as the backend-to-client direction does, returning bytes passed.
fn relay_scan(scanner: &mut FrameScanner, buf: &[u8]) -> usize {
    let mut pos = 0;
    loop {
        match scanner.scan(&buf[pos..], |t| t == b'Z' || t == b'E', |_| true) {
            Step::Forward(n) => pos += n,
            _ => return pos,
        }
    }
}

fn backend_to_client(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan_result");
    for (rows, width) in [(1usize, 4usize), (1000, 8), (1000, 100), (10, 8000)] {
        let buf = result_set(rows, width);
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{rows}x{width}B")),
            &buf,
            |b, buf| {
                let mut scanner = FrameScanner::new(i32::MAX as u32);
                b.iter(|| {
                    let n = relay_scan(&mut scanner, std::hint::black_box(buf));
                    assert_eq!(n, buf.len());
                })
            },
        );
    }
    group.finish();
}

fn client_to_backend(c: &mut Criterion) {
    // pgbench -S's statement, as a simple Query.
    let mut q = Vec::new();
    put_message(
        &mut q,
        b'Q',
        b"SELECT abalance FROM pgbench_accounts WHERE aid = 48213;\0",
    );
    c.bench_function("scan_query", |b| {
        let mut scanner = FrameScanner::new(1 << 30);
        b.iter(|| {
            let step = scanner.scan(
                std::hint::black_box(&q),
                |t| matches!(t, b'Q' | b'P' | b'S' | b'F' | b'X'),
                |_| true,
            );
            assert_eq!(step, Step::Forward(q.len()));
        })
    });
}

criterion_group!(benches, backend_to_client, client_to_backend);
criterion_main!(benches);
