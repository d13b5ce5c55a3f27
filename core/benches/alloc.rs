//! Allocator micro-benchmark: 100,000 allocations from a /16, against a plain `HashSet` baseline.
//!
//! A /16 holds 65,536 addresses, so the 100,000 allocations are 60,000 that fill it and then
//! 40,000 that each follow the release of a pseudo-randomly chosen holder (churn: the freed
//! address lies below the cursor and must be found again). Also: 100,000 from an IPv6 /64.

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
    g.bench_function("assign_100k_from_v4_16_with_churn", |b| {
        b.iter_batched(
            || allocator("10.0.0.0/16"),
            |mut a| {
                let mut rng = 0x2545_f491_4f6c_dd1du64;
                for (i, r) in v4.iter().enumerate() {
                    if i >= FILL {
                        // xorshift: a victim among the Services allocated so far.
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let victim = (rng % i as u64) as usize;
                        a.release(&v4[victim].key);
                    }
                    black_box(a.assign(r).ok());
                }
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
