//! Allocator micro-benchmark: 100,000 allocations from a /16, against a plain `HashSet` baseline.
//!
//! A /16 holds 65,536 addresses, so the 100,000 allocations are 60,000 that fill it and then
//! 40,000 that each follow the release of a pseudo-randomly chosen current holder (churn: the
//! freed address lies below the cursor and must be found again). Every one of the 100,000
//! `assign` calls succeeds (checked once before measuring); the timed loop also includes the
//! 40,000 `release` calls. Also: 100,000 from an IPv6 /64.

use std::collections::HashSet;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ferrolb_core::alloc::{Allocator, FamilyRequest, Pool, ServiceRequest, parse_pool_entry};

const N: usize = 100_000;
const FILL: usize = 60_000;

fn allocator(cidr: &str) -> Allocator {
    let mut a = Allocator::new();
    a.set_pools(vec![Pool::new(
        "bench",
        vec![parse_pool_entry(cidr).unwrap()],
    )]);
    a
}

fn requests(families: FamilyRequest) -> Vec<ServiceRequest> {
    (0..N)
        .map(|i| ServiceRequest {
            families: families.clone(),
            ..ServiceRequest::new(format!("ns{}", i % 100), format!("svc-{i}"))
        })
        .collect()
}

/// Fills the /16 with the first `FILL` requests, then releases a random current holder before
/// each of the others; returns how many `assign` calls succeeded.
fn churn(a: &mut Allocator, reqs: &[ServiceRequest]) -> usize {
    let mut holders: Vec<usize> = Vec::with_capacity(FILL);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut ok = 0;
    for (i, r) in reqs.iter().enumerate() {
        if i >= FILL {
            // xorshift: a victim among the Services holding an address now.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let victim = holders.swap_remove((rng % holders.len() as u64) as usize);
            a.release(&reqs[victim].key);
        }
        if black_box(a.assign(r)).is_ok() {
            ok += 1;
            holders.push(i);
        }
    }
    ok
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc");
    g.sample_size(10).measurement_time(Duration::from_secs(8));

    let v4 = requests(FamilyRequest::v4());
    g.bench_function("baseline_hashset_insert_100k", |b| {
        b.iter_batched(
            || HashSet::<IpAddr>::with_capacity(0),
            |mut set| {
                for i in 0..N as u32 {
                    set.insert(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
                }
                set
            },
            BatchSize::LargeInput,
        )
    });
    let ok = churn(&mut allocator("10.0.0.0/16"), &v4);
    assert_eq!(ok, N, "every churn allocation must succeed");
    g.bench_function("assign_100k_from_v4_16_with_churn", |b| {
        b.iter_batched(
            || allocator("10.0.0.0/16"),
            |mut a| {
                churn(&mut a, &v4);
                a
            },
            BatchSize::LargeInput,
        )
    });
    let v6 = requests(FamilyRequest::v6());
    g.bench_function("assign_100k_from_v6_64", |b| {
        b.iter_batched(
            || allocator("2001:db8:ff::/64"),
            |mut a| {
                for r in &v6 {
                    black_box(a.assign(r).unwrap());
                }
                a
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
