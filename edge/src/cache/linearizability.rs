//! Property test: purges are linearizable with fills of every kind.
//!
//! A generated schedule interleaves viewers (plain misses, query-string variants, `Vary`
//! variants, revalidations answered by 304s, compressed variants derived from the stored object),
//! origin answers released one at a time, and purges (exact, prefix, everything). The origin
//! answers with the content it had when the request was sent, and moves to a new version of a
//! path just before each purge of it. Invariant: a viewer that starts after a purge has returned
//! never gets content older than that purge, whatever was in flight around it.
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use bytes::Bytes;
use edgefleet_config::{CacheConfig, CacheKey, ErrorCaching, KeyList};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, header};
use parking_lot::Mutex;
use proptest::prelude::*;
use tokio::sync::oneshot;

use super::{
    Ask, Cache, Filled, Lookup,
    fill::{FillJob, FillRules},
    freshness::{Policy, TtlPolicy},
    invalidation::PurgePattern,
    key,
    object::CachedObject,
    store::Store,
    stream::Source,
};
use crate::origin::{Fetched, OriginError, testing::fetched};

/// The paths, each answered its own way.
const PATHS: [&str; 3] = ["/fresh", "/revalidated", "/varied"];

#[derive(Default)]
struct FakeOrigin {
    versions: Mutex<HashMap<&'static str, u32>>,
    /// Requests sent and not answered yet, oldest first.
    waiting: Mutex<VecDeque<oneshot::Sender<()>>>,
}

impl FakeOrigin {
    fn version(&self, path: &'static str) -> u32 {
        *self.versions.lock().get(path).unwrap_or(&0)
    }

    fn answer_oldest(&self) {
        if let Some(tx) = self.waiting.lock().pop_front() {
            let _ = tx.send(());
        }
    }
}

struct Request {
    origin: Arc<FakeOrigin>,
    path: &'static str,
}

impl Source for Request {
    fn fetch(self: Arc<Self>, extra: HeaderMap) -> BoxFuture<'static, Result<Fetched, OriginError>> {
        // The content is what the origin had when the request was sent.
        let version = self.origin.version(self.path);
        let (tx, rx) = oneshot::channel();
        self.origin.waiting.lock().push_back(tx);
        Box::pin(async move {
            let _ = rx.await;
            let etag = format!("\"v{version}\"");
            let body = format!("{version:06}");
            let length = body.len().to_string();
            let mut headers = vec![("etag", etag.as_str()), ("content-length", length.as_str())];
            match self.path {
                "/revalidated" => headers.push(("cache-control", "max-age=0")),
                "/varied" => headers.extend([("cache-control", "max-age=600"), ("vary", "x-v")]),
                _ => headers.push(("cache-control", "max-age=600")),
            }
            if extra
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == etag.as_bytes())
            {
                return Ok(fetched(304, &headers, Bytes::new()));
            }
            Ok(fetched(200, &headers, Bytes::from(body)))
        })
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// A viewer asks for a path (with a query string, a `Vary` value, compressed or not).
    View {
        path: usize,
        query: bool,
        vary: bool,
        derived: bool,
    },
    /// The origin answers its oldest waiting request.
    Answer,
    /// The origin changes a path (or every path), then the edge purges it.
    Purge { path: Option<usize>, prefix: bool },
    /// Everything else runs for a while.
    Run,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..PATHS.len(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(path, query, vary, derived)| Step::View { path, query, vary, derived }),
        4 => Just(Step::Answer),
        2 => (proptest::option::of(0..PATHS.len()), any::<bool>()).prop_map(|(path, prefix)| Step::Purge { path, prefix }),
        2 => Just(Step::Run),
    ]
}

fn version_of(body: &[u8]) -> u32 {
    std::str::from_utf8(body)
        .ok()
        .and_then(|b| b.trim_start_matches('z').parse().ok())
        .unwrap_or_else(|| panic!("a version, not {body:?}"))
}

/// One viewer: what the request path does with the cache's answers, reduced to the content's
/// version. `None` when it got nothing from the cache (an origin failure cannot happen here).
async fn view(
    cache: Arc<Cache>,
    origin: Arc<FakeOrigin>,
    path: &'static str,
    query: bool,
    vary: bool,
    derived: bool,
) -> Option<u32> {
    let errors = HashMap::new();
    let policy = Policy {
        ttl: TtlPolicy {
            min: 0,
            default: 0,
            max: 31_536_000,
        },
        stale_if_error: 0,
        error_caching: ErrorCaching::Minimum,
        error_responses: &errors,
    };
    let key_policy = CacheKey {
        query_strings: KeyList::All,
        headers: KeyList::None,
        cookies: KeyList::None,
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-v", HeaderValue::from_static(if vary { "b" } else { "a" }));
    let keyed = key::build(
        key::KeyInput {
            host: "h",
            path,
            query: query.then_some("q=1"),
            headers: &headers,
        },
        &key_policy,
    );
    let ask = Ask {
        primary: &keyed.primary,
        headers: &headers,
        key_policy: &key_policy,
        policy: &policy,
    };
    let job = |stale: Option<Arc<CachedObject>>| FillJob {
        primary: keyed.primary.clone(),
        purge_path: keyed.purge_path.clone(),
        source: Arc::new(Request {
            origin: origin.clone(),
            path,
        }),
        forwarded: headers.clone(),
        stale,
        stale_on_error: false,
        rules: FillRules {
            ttl: policy.ttl,
            error_caching: ErrorCaching::Minimum,
            error_responses: Arc::new(HashMap::new()),
            key_policy: key_policy.clone(),
            cache_set_cookie_responses: false,
            max_object_bytes: 1 << 20,
        },
    };
    let (object, key) = match cache.lookup(&ask).await {
        Lookup::Fresh(found) => (found.object, found.key),
        Lookup::Stale { found, .. } => match cache
            .fill(&ask, &found.key, job(Some(found.object.clone())))
            .await
        {
            Filled::Refreshed { object, .. } => (object, found.key),
            filled => return read(filled).await,
        },
        Lookup::Miss { key } => match cache.fill(&ask, &key, job(None)).await {
            Filled::Streaming { shared, reader, .. } => {
                let mut reader = reader.or_else(|| shared.body.reader(None, None))?;
                let mut body = Vec::new();
                while let Some(piece) = reader.next().await {
                    body.extend_from_slice(&piece.ok()?);
                }
                (Arc::new(shared.object(body.into())), shared.stored_key.clone())
            }
            filled => return read(filled).await,
        },
    };
    if !derived {
        return Some(version_of(&object.body));
    }
    let variant_key = key::with_encoding(&key, "z");
    if let Lookup::Fresh(found) = cache.lookup_key(&variant_key, &policy).await {
        return Some(version_of(&found.object.body));
    }
    let variant = cache
        .derive(&variant_key, &object, |o| {
            Ok(CachedObject {
                body: Bytes::from([&b"z"[..], &o.body].concat()),
                ..o.clone()
            })
        })
        .await?;
    Some(version_of(&variant.body))
}

async fn read(filled: Filled) -> Option<u32> {
    match filled {
        Filled::Refreshed { object, .. } => Some(version_of(&object.body)),
        _ => None,
    }
}

fn run(steps: Vec<Step>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let config = CacheConfig {
            memory_bytes: 64 << 20,
            max_object_bytes: None,
            disk: None,
        };
        let store = Store::open(&config).await.expect("store");
        let cache = Arc::new(Cache::new(store, crate::metrics::Metrics::new()));
        let origin = Arc::new(FakeOrigin::default());
        // The version each path's purges guarantee from now on, without and with a query string
        // (an exact purge leaves query-string variants, as CloudFront's do).
        let floors: Arc<Mutex<HashMap<(&'static str, bool), u32>>> = Arc::default();
        let mut viewers = Vec::new();
        for step in steps {
            match step {
                Step::View {
                    path,
                    query,
                    vary,
                    derived,
                } => {
                    let path = PATHS[path];
                    let floor = floors.lock().get(&(path, query)).copied().unwrap_or(0);
                    let (cache, origin) = (cache.clone(), origin.clone());
                    viewers.push(tokio::spawn(async move {
                        if let Some(seen) = view(cache, origin, path, query, vary, derived).await {
                            assert!(
                                seen >= floor,
                                "{path}: version {seen} after a purge guaranteeing {floor}"
                            );
                        }
                    }));
                }
                Step::Answer => origin.answer_oldest(),
                Step::Purge { path, prefix } => {
                    let (pattern, purged): (String, Vec<&'static str>) = match path {
                        None => ("/*".to_owned(), PATHS.to_vec()),
                        Some(i) if prefix => (format!("{}*", PATHS[i]), vec![PATHS[i]]),
                        Some(i) => (PATHS[i].to_owned(), vec![PATHS[i]]),
                    };
                    for path in &purged {
                        *origin.versions.lock().entry(path).or_default() += 1;
                    }
                    let parsed = PurgePattern::parse(&pattern).expect("valid");
                    cache.purge(&[(parsed, pattern.clone())]).await.expect("purge");
                    for path in purged {
                        let version = origin.version(path);
                        floors.lock().insert((path, false), version);
                        if pattern.ends_with('*') {
                            floors.lock().insert((path, true), version);
                        }
                    }
                }
                Step::Run => {
                    for _ in 0..8 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
        // Let everything finish: every waiting request is answered, every viewer completes.
        while viewers.iter().any(|v| !v.is_finished()) {
            origin.answer_oldest();
            tokio::task::yield_now().await;
        }
        for viewer in viewers {
            viewer.await.expect("the invariant held");
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::fuzz::cases(300)))]

    #[test]
    fn nothing_fetched_before_a_purge_is_served_after_it(steps in proptest::collection::vec(step(), 1..80)) {
        run(steps);
    }
}
