//! The ureq agents: one per route, each with its own connection pool.
//!
//! A ureq agent's connector and resolver are fixed when it is made, and its
//! pool keys connections by origin only. So each route (direct, or through
//! one proxy) gets an agent of its own: a connection to a proxy is never
//! handed to a direct exchange or to another proxy's, and the pool settings
//! (idle connections per host, idle age) are the same on every route.
//! Agents are made on first use and kept: a manager uses a handful of
//! proxies at most.

use std::sync::Mutex;

use handle_api::{HostOverrides, Proxy};
use ureq::config::Config;
use ureq::Agent;

use crate::transport::{OverrideResolver, WatchedConnector};

/// The agents of one backend.
pub(crate) struct Agents {
    config: Config,
    overrides: HostOverrides,
    tls: crate::tls::TlsSetup,
    direct: Agent,
    proxied: Mutex<Vec<(Proxy, Agent)>>,
}

impl Agents {
    pub(crate) fn new(config: Config, overrides: HostOverrides, tls: crate::tls::TlsSetup) -> Self {
        let direct = make(&config, &overrides, &tls, None);
        Agents {
            config,
            overrides,
            tls,
            direct,
            proxied: Mutex::new(Vec::new()),
        }
    }

    /// The agent of the route through `proxy` (`None`: direct).
    pub(crate) fn get(&self, proxy: Option<&Proxy>) -> Agent {
        let Some(proxy) = proxy else {
            return self.direct.clone();
        };
        // Only pushed to under the lock: a panic cannot leave the list half-changed.
        let mut list = self.proxied.lock().unwrap_or_else(|p| p.into_inner());
        // Proxies compare with their credentials: two users of one proxy
        // never share a connection.
        if let Some((_, agent)) = list.iter().find(|(p, _)| p == proxy) {
            return agent.clone();
        }
        let agent = make(&self.config, &self.overrides, &self.tls, Some(proxy));
        list.push((proxy.clone(), agent.clone()));
        agent
    }
}

fn make(
    config: &Config,
    overrides: &HostOverrides,
    tls: &crate::tls::TlsSetup,
    proxy: Option<&Proxy>,
) -> Agent {
    Agent::with_parts(
        config.clone(),
        WatchedConnector::new(proxy.cloned(), tls.clone(), overrides.clone()),
        OverrideResolver::for_route(overrides.clone(), proxy),
    )
}
