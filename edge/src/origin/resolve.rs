//! Name resolution for origins: the system resolver, except that `localhost` and every name under
//! it resolve to loopback without asking it (RFC 6761 §6.3, as browsers and systemd-resolved do).
//! That makes virtual-host style S3 endpoints such as `bucket.localhost:9000` work on a machine
//! whose resolver does not know them.
use std::{
    future::Future,
    io,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    vec,
};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower_service::Service;

#[derive(Clone)]
pub(crate) struct Resolver {
    system: GaiResolver,
}

impl Resolver {
    pub(crate) fn new() -> Self {
        Self {
            system: GaiResolver::new(),
        }
    }
}

fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

impl Service<Name> for Resolver {
    type Response = vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.system.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        if is_localhost(name.as_str()) {
            let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            return Box::pin(async move { Ok(vec![loopback].into_iter()) });
        }
        let lookup = self.system.call(name);
        Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_localhost_names_are_special() {
        assert!(
            is_localhost("localhost") && is_localhost("bucket.localhost") && is_localhost("a.b.LOCALHOST.")
        );
        assert!(!is_localhost("localhost.example.com") && !is_localhost("notlocalhost"));
    }
}
