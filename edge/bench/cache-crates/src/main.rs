//! Compares the in-memory cache candidates for the edge under the edge's access pattern:
//! string keys, `Arc` values weighted by body size, a byte-bounded capacity, two threads (the
//! machine has two cores), Zipf-distributed popularity. Prints ns per operation and hit ratios.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::SmallRng};
use rand_distr::{Distribution, Zipf};

/// A cached object stand-in: only its size matters to the caches.
struct Object {
    size: u32,
}

trait Candidate: Send + Sync {
    fn name(&self) -> &'static str;
    fn get(&self, key: &str) -> Option<Arc<Object>>;
    fn insert(&self, key: String, value: Arc<Object>);
    fn used_bytes(&self) -> u64;
}

struct Moka(moka::sync::Cache<String, Arc<Object>>);
impl Candidate for Moka {
    fn name(&self) -> &'static str {
        "moka 0.12 (W-TinyLFU)"
    }
    fn get(&self, key: &str) -> Option<Arc<Object>> {
        self.0.get(key)
    }
    fn insert(&self, key: String, value: Arc<Object>) {
        self.0.insert(key, value)
    }
    fn used_bytes(&self) -> u64 {
        self.0.run_pending_tasks();
        self.0.weighted_size()
    }
}

#[derive(Clone)]
struct BodyWeighter;
impl quick_cache::Weighter<String, Arc<Object>> for BodyWeighter {
    fn weight(&self, key: &String, value: &Arc<Object>) -> u64 {
        key.len() as u64 + u64::from(value.size)
    }
}
struct Quick(quick_cache::sync::Cache<String, Arc<Object>, BodyWeighter>);
impl Candidate for Quick {
    fn name(&self) -> &'static str {
        "quick_cache 0.7 (CLOCK-PRO)"
    }
    fn get(&self, key: &str) -> Option<Arc<Object>> {
        self.0.get(key)
    }
    fn insert(&self, key: String, value: Arc<Object>) {
        self.0.insert(key, value)
    }
    fn used_bytes(&self) -> u64 {
        self.0.weight()
    }
}

struct Foyer(foyer::Cache<String, Arc<Object>>, &'static str);
impl Candidate for Foyer {
    fn name(&self) -> &'static str {
        self.1
    }
    fn get(&self, key: &str) -> Option<Arc<Object>> {
        self.0.get(key).map(|e| e.value().clone())
    }
    fn insert(&self, key: String, value: Arc<Object>) {
        self.0.insert(key, value);
    }
    fn used_bytes(&self) -> u64 {
        self.0.usage() as u64
    }
}

fn candidates(capacity: u64, items: usize) -> Vec<Box<dyn Candidate>> {
    let weigh = |k: &String, v: &Arc<Object>| k.len() + v.size as usize;
    vec![
        Box::new(Moka(
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .weigher(move |k: &String, v: &Arc<Object>| weigh(k, v) as u32)
                .build(),
        )),
        Box::new(Quick(quick_cache::sync::Cache::with_weighter(
            items,
            capacity,
            BodyWeighter,
        ))),
        Box::new(Foyer(
            foyer::CacheBuilder::new(capacity as usize)
                .with_weighter(weigh)
                .with_eviction_config(foyer::S3FifoConfig::default())
                .build(),
            "foyer 0.22 (S3-FIFO)",
        )),
        Box::new(Foyer(
            foyer::CacheBuilder::new(capacity as usize)
                .with_weighter(weigh)
                .with_eviction_config(foyer::LfuConfig::default())
                .build(),
            "foyer 0.22 (w-TinyLFU)",
        )),
    ]
}

struct Workload {
    name: &'static str,
    keys: usize,
    capacity: u64,
    ops_per_thread: usize,
    zipf_s: f64,
    size: fn(&mut SmallRng) -> u32,
}

struct Outcome {
    ns_per_op: f64,
    hit_ratio: f64,
    byte_hit_ratio: f64,
    used: u64,
}

fn run(cache: &dyn Candidate, w: &Workload, threads: usize) -> Outcome {
    // Sizes are a property of the key, so every thread and every candidate sees the same objects.
    let mut rng = SmallRng::seed_from_u64(7);
    let sizes: Vec<u32> = (0..w.keys).map(|_| (w.size)(&mut rng)).collect();
    let names: Vec<String> = (0..w.keys).map(|i| format!("www.example.com/assets/{i:08}.js")).collect();
    // Key sequences are drawn up front so that only the cache is timed, not the Zipf sampler.
    let sequences: Vec<Vec<u32>> = (0..threads)
        .map(|t| {
            let mut rng = SmallRng::seed_from_u64(t as u64 + 1);
            let zipf = Zipf::new(w.keys as f64, w.zipf_s).expect("valid zipf");
            (0..w.ops_per_thread)
                .map(|_| zipf.sample(&mut rng) as u32 - 1)
                .collect()
        })
        .collect();
    let start = Instant::now();
    let totals: Vec<(u64, u64, u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (sizes, names, sequences) = (&sizes, &names, &sequences);
                let sequence = &sequences[t];
                s.spawn(move || {
                    let (mut hits, mut hit_bytes, mut bytes) = (0u64, 0u64, 0u64);
                    for &i in sequence {
                        let i = i as usize;
                        bytes += u64::from(sizes[i]);
                        if cache.get(&names[i]).is_some() {
                            hits += 1;
                            hit_bytes += u64::from(sizes[i]);
                        } else {
                            cache.insert(names[i].clone(), Arc::new(Object { size: sizes[i] }));
                        }
                    }
                    (hits, hit_bytes, bytes, w.ops_per_thread as u64)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let elapsed: Duration = start.elapsed();
    let (hits, hit_bytes, bytes, ops) = totals
        .iter()
        .fold((0, 0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3));
    Outcome {
        ns_per_op: elapsed.as_nanos() as f64 * threads as f64 / ops as f64,
        hit_ratio: hits as f64 / ops as f64,
        byte_hit_ratio: hit_bytes as f64 / bytes as f64,
        used: cache.used_bytes(),
    }
}

fn main() {
    let log_uniform = |rng: &mut SmallRng| -> u32 {
        // 1 KiB .. 1 MiB, log-uniform: many small assets, a few large ones.
        let exp: f64 = rng.random_range(10.0..20.0);
        2f64.powf(exp) as u32
    };
    let workloads = [
        Workload {
            name: "hot set fits (10k x 1 KiB, 64 MiB)",
            keys: 10_000,
            capacity: 64 << 20,
            ops_per_thread: 4_000_000,
            zipf_s: 0.9,
            size: |_| 1024,
        },
        Workload {
            name: "Zipf 0.9, 200k objects 1 KiB-1 MiB, 256 MiB",
            keys: 200_000,
            capacity: 256 << 20,
            ops_per_thread: 2_000_000,
            zipf_s: 0.9,
            size: log_uniform,
        },
        Workload {
            name: "Zipf 0.7 (flatter), 200k objects 1 KiB-1 MiB, 256 MiB",
            keys: 200_000,
            capacity: 256 << 20,
            ops_per_thread: 2_000_000,
            zipf_s: 0.7,
            size: log_uniform,
        },
    ];
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("threads: {threads}");
    for w in &workloads {
        println!("\n## {}", w.name);
        println!(
            "| {:<28} | {:>9} | {:>9} | {:>14} | {:>14} |",
            "crate", "ns/op", "hit ratio", "byte hit ratio", "used/capacity"
        );
        for c in candidates(w.capacity, w.keys) {
            // Warm once so every candidate is measured in steady state, then measure.
            run(c.as_ref(), w, threads);
            let o = run(c.as_ref(), w, threads);
            println!(
                "| {:<28} | {:>9.1} | {:>9.3} | {:>14.3} | {:>14.3} |",
                c.name(),
                o.ns_per_op,
                o.hit_ratio,
                o.byte_hit_ratio,
                o.used as f64 / w.capacity as f64
            );
        }
    }
}
