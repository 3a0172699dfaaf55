//! The request path's pure work, natively: key extraction from baggage of 1, 8 and 64 members,
//! route lookup among 10,000 sandboxes, a rerouted request's whole pure path, and a
//! token-bucket update.
//! `cargo bench -p sandbox-router --bench hot_path`

#![allow(clippy::expect_used, clippy::arithmetic_side_effects)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sandbox_router::core::audit::audit_record;
use sandbox_router::core::bucket::{BudgetCell, RateLimit};
use sandbox_router::core::config::{compile, HostFacts};
use sandbox_router::core::header_map::{serialize, HeaderPairs};
use sandbox_router::core::policy::{evaluate, Label};
use sandbox_router::core::request::scan;
use sandbox_router::core::router::Router;

fn router(sandboxes: usize) -> Router {
    let table: Vec<String> = (0..sandboxes)
        .map(|i| {
            format!(r#""sb-{i}": {{"routes": {{"payment": {{"authority": "payment-sb-{i}.shop.svc.cluster.local"}}}}}}"#)
        })
        .collect();
    let json = format!(
        r#"{{"namespace": "shop", "sandboxes": {{{}}}}}"#,
        table.join(",")
    );
    compile(json.as_bytes(), &HostFacts::default()).expect("benchmark configuration")
}

fn request(baggage_members: usize, key: &str) -> Vec<u8> {
    let mut members: Vec<String> = (1..baggage_members)
        .map(|i| format!("member{i}=value{i};p=1"))
        .collect();
    members.push(format!("sandbox={key}"));
    let baggage = members.join(",");
    serialize(&[
        (b":authority", b"payment"),
        (b":path", b"/orders"),
        (b":method", b"GET"),
        (b"x-request-id", b"0b3c1c55-7b0e-4a5e-9bd8-6c0f5f6b0a51"),
        (b"baggage", baggage.as_bytes()),
    ])
}

fn key_extraction(c: &mut Criterion) {
    let router = router(1);
    for members in [1, 8, 64] {
        let buffer = request(members, "sb-0");
        c.bench_function(
            &format!("scan headers, baggage of {members} members"),
            |b| b.iter(|| scan(&router.settings, HeaderPairs::new(black_box(&buffer)))),
        );
    }
    let keyless = serialize(&[
        (b":authority", b"payment"),
        (b":path", b"/"),
        (b":method", b"GET"),
    ]);
    c.bench_function("scan headers, no key", |b| {
        b.iter(|| scan(&router.settings, HeaderPairs::new(black_box(&keyless))))
    });
}

fn route_lookup(c: &mut Criterion) {
    for sandboxes in [1, 10_000] {
        let router = router(sandboxes);
        let buffer = request(1, &format!("sb-{}", sandboxes - 1));
        let request = scan(&router.settings, HeaderPairs::new(&buffer));
        c.bench_function(&format!("route lookup among {sandboxes} sandboxes"), |b| {
            b.iter(|| router.decide(black_box(&request)))
        });
    }
}

/// Everything a rerouted request computes between reading its headers and the host calls that
/// apply the decision: scan, policy, and the audit record.
fn keyed_request(c: &mut Criterion) {
    let router = router(10_000);
    let buffer = request(1, "sb-9999");
    c.bench_function("rerouted request: scan + evaluate + audit record", |b| {
        b.iter(|| {
            let request = scan(&router.settings, HeaderPairs::new(black_box(&buffer)));
            let evaluation = evaluate(&router, &request, || true, || None);
            let label = evaluation.label.unwrap_or(Label::InvalidKey);
            black_box(audit_record(&request, &evaluation, label))
        })
    });
}

fn bucket_update(c: &mut Criterion) {
    let limit = RateLimit::new(50.0, 100).expect("limit");
    let mut cell = BudgetCell::full(Some(&limit), 0);
    let mut now = 0u64;
    c.bench_function("token bucket refill + take", |b| {
        b.iter(|| {
            now = now.wrapping_add(1_000_000);
            cell.refill(&limit, black_box(now));
            black_box(cell.take_token())
        })
    });
}

criterion_group!(
    benches,
    key_extraction,
    route_lookup,
    keyed_request,
    bucket_update
);
criterion_main!(benches);
