//! Scheduling: at most 6 loads in flight per scheme+host+port (configurable),
//! a total limit, and a queue behind them ordered by priority, then arrival.
//! The limits are checked where they matter, at the server: `/slow/MS` holds
//! each request so the origin's "requests in progress" shows the client's
//! concurrency.

use std::net::Ipv4Addr;
use std::time::Duration;

use resource_handle::{NetworkAccessManager, Priority, ResourceHandle, ResourceRequest};

use super::{build, expect_error, expect_status, wait_for, CaseResult, Ctx, Fetched};
use crate::servers::{max_overlap, Origin};

cases!("scheduling";
    "scheduling.fifty-loads-at-most-6-at-once" => fifty_loads,
    "scheduling.per-host-limit-2" => per_host_2,
    "scheduling.total-limit-3-across-two-origins" => total_3,
    "scheduling.priority-order" => priority_order,
    "scheduling.same-priority-in-arrival-order" => arrival_order,
    "scheduling.cancel-queued-never-reaches-server" => cancel_queued,
    "scheduling.drop-queued-handle-never-reaches-server" => drop_queued,
    "scheduling.queue-and-in-flight-counts" => queue_counts,
    "scheduling.different-hosts-do-not-share-a-limit" => different_hosts,
    "scheduling.different-ports-do-not-share-a-limit" => different_ports,
    "scheduling.host-names-counted-apart" => host_names,
);

/// Starts one GET per url, all at once, on `mgr`.
fn start_all(mgr: &NetworkAccessManager, urls: &[String]) -> Result<Vec<ResourceHandle>, String> {
    urls.iter()
        .map(|u| build(ResourceRequest::get(u)).map(|r| mgr.load(r)))
        .collect()
}

/// Runs every handle to its end and checks each answered 200 with `body`.
fn drain_ok(ctx: &Ctx, handles: Vec<ResourceHandle>, body: &[u8]) -> Result<Vec<Fetched>, String> {
    let mut out = Vec::with_capacity(handles.len());
    for (i, h) in handles.into_iter().enumerate() {
        let f = ctx.drain(h);
        expect_status(&f.trace, 200).map_err(|e| format!("load {i}: {e}"))?;
        ensure!(
            f.body == body,
            "load {i}: body {:?}",
            String::from_utf8_lossy(&f.body)
        );
        out.push(f);
    }
    Ok(out)
}

/// Checks an origin never had more than `limit` requests or connections at
/// once, and that the manager did use the whole limit.
fn check_limit(o: &Origin, name: &str, limit: usize) -> Result<(), String> {
    ensure!(
        o.max_requests_in_progress() <= limit,
        "{name} saw {} requests in progress at once, the limit is {limit}",
        o.max_requests_in_progress()
    );
    ensure!(
        o.stats().max_active() <= limit,
        "{name} saw {} connections open at once, the limit is {limit}",
        o.stats().max_active()
    );
    // The limit is a ceiling the scheduler fills, not a reason to serialise.
    ensure!(
        o.max_requests_in_progress() == limit,
        "{name} saw at most {} requests in progress at once with a limit of {limit}",
        o.max_requests_in_progress()
    );
    Ok(())
}

fn last(fetched: Vec<Fetched>) -> CaseResult {
    fetched
        .into_iter()
        .last()
        .map(|f| f.trace)
        .ok_or_else(|| "no load ran".into())
}

fn fifty_loads(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/slow/250")?;
    let mgr = ctx.manager()?;
    let handles = start_all(&mgr, &vec![url; 50])?;
    let fetched = drain_ok(ctx, handles, b"slow\n")?;
    let o = ctx.origin()?;
    ensure_eq!(o.requests().len(), 50);
    check_limit(o, "the origin", 6)?;
    last(fetched)
}

fn per_host_2(ctx: &mut Ctx) -> CaseResult {
    let url = ctx.origin_url("/slow/250")?;
    let mgr = ctx.manager_with(|b| Ok(b.max_connections_per_host(2)))?;
    let handles = start_all(&mgr, &vec![url; 10])?;
    let fetched = drain_ok(ctx, handles, b"slow\n")?;
    let o = ctx.origin()?;
    ensure_eq!(o.requests().len(), 10);
    check_limit(o, "the origin", 2)?;
    last(fetched)
}

fn total_3(ctx: &mut Ctx) -> CaseResult {
    let a = ctx.origin_url("/slow/250")?;
    let b = ctx.other_url("/slow/250")?;
    let mgr = ctx.manager_with(|m| Ok(m.max_loads_total(3)))?;
    let urls: Vec<String> = (0..12)
        .map(|i| if i % 2 == 0 { a.clone() } else { b.clone() })
        .collect();
    let handles = start_all(&mgr, &urls)?;
    let fetched = drain_ok(ctx, handles, b"slow\n")?;
    let mut intervals = ctx.origin()?.request_intervals();
    intervals.extend(ctx.other_origin()?.request_intervals());
    ensure_eq!(intervals.len(), 12);
    let together = max_overlap(&intervals);
    ensure!(
        together <= 3,
        "the two origins had {together} requests in progress at once, the total limit is 3"
    );
    ensure_eq!(together, 3);
    last(fetched)
}

/// A manager with one load per host, and a load on `/gated/ID` holding the slot.
fn one_slot_held(
    ctx: &mut Ctx,
    gate: &str,
) -> Result<(NetworkAccessManager, ResourceHandle), String> {
    let url = ctx.origin_url(&format!("/gated/{gate}"))?;
    let mgr = ctx.manager_with(|b| Ok(b.max_connections_per_host(1)))?;
    // The slot is taken as the load starts, so everything after it queues.
    let blocker = mgr.load(build(ResourceRequest::get(url))?);
    Ok((mgr, blocker))
}

fn queued_order(ctx: &mut Ctx, loads: &[(&str, Priority)], expected: &[&str]) -> CaseResult {
    let (mgr, blocker) = one_slot_held(ctx, "order")?;
    let mut handles = Vec::new();
    for (name, priority) in loads {
        let url = ctx.origin_url(&format!("/echo/{name}"))?;
        handles.push(mgr.load(build(ResourceRequest::get(url).priority(*priority))?));
    }
    ensure_eq!(mgr.queued_loads(), loads.len());
    ctx.origin()?.open_gate("order");
    let b = ctx.drain(blocker);
    expect_status(&b.trace, 200)?;
    let mut traces = Vec::new();
    for h in handles {
        let f = ctx.drain(h);
        expect_status(&f.trace, 200)?;
        traces.push(f.trace);
    }
    let order: Vec<String> = ctx
        .origin()?
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    let mut want = vec!["/gated/order".to_owned()];
    want.extend(expected.iter().map(|n| format!("/echo/{n}")));
    ensure_eq!(order, want);
    traces.pop().ok_or_else(|| "no load ran".into())
}

fn priority_order(ctx: &mut Ctx) -> CaseResult {
    queued_order(
        ctx,
        &[
            ("low", Priority::Low),
            ("high", Priority::High),
            ("very-high", Priority::VeryHigh),
            ("very-low", Priority::VeryLow),
            ("medium", Priority::Medium),
        ],
        &["very-high", "high", "medium", "low", "very-low"],
    )
}

fn arrival_order(ctx: &mut Ctx) -> CaseResult {
    queued_order(
        ctx,
        &[
            ("first", Priority::Medium),
            ("second", Priority::Medium),
            ("third", Priority::Medium),
            ("fourth", Priority::Medium),
        ],
        &["first", "second", "third", "fourth"],
    )
}

/// Queues a, b and c behind a held slot, removes b with `remove`, and checks
/// b never reached the server while a and c did.
fn remove_queued(
    ctx: &mut Ctx,
    gate: &str,
    remove: fn(ResourceHandle) -> Option<ResourceHandle>,
) -> CaseResult {
    let (mgr, blocker) = one_slot_held(ctx, gate)?;
    let mut start = |name: &str| -> Result<ResourceHandle, String> {
        let url = ctx.origin_url(&format!("/echo/{name}"))?;
        Ok(mgr.load(build(ResourceRequest::get(url))?))
    };
    let a = start("a")?;
    let b = start("b")?;
    let c = start("c")?;
    ensure_eq!(mgr.queued_loads(), 3);
    let b = remove(b);
    ensure_eq!(mgr.queued_loads(), 2);
    ctx.origin()?.open_gate(gate);
    expect_status(&ctx.drain(blocker).trace, 200)?;
    expect_status(&ctx.drain(a).trace, 200)?;
    let c = ctx.drain(c);
    expect_status(&c.trace, 200)?;
    let targets: Vec<String> = ctx
        .origin()?
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    ensure_eq!(
        targets,
        vec![format!("/gated/{gate}"), "/echo/a".into(), "/echo/c".into()]
    );
    match b {
        Some(b) => {
            let f = ctx.drain(b);
            expect_error(&f.trace, "cancelled")?;
            ensure_eq!(f.trace.events, vec!["failed"]);
            Ok(f.trace)
        }
        None => Ok(c.trace),
    }
}

fn cancel_queued(ctx: &mut Ctx) -> CaseResult {
    remove_queued(ctx, "cancel", |h| {
        h.cancel();
        Some(h)
    })
}

fn drop_queued(ctx: &mut Ctx) -> CaseResult {
    remove_queued(ctx, "drop", |h| {
        drop(h);
        None
    })
}

fn queue_counts(ctx: &mut Ctx) -> CaseResult {
    let (mgr, blocker) = one_slot_held(ctx, "counts")?;
    let url = ctx.origin_url("/bytes/10")?;
    let queued: Vec<ResourceHandle> = start_all(&mgr, &vec![url; 3])?;
    ensure_eq!(mgr.loads_in_flight(), 1);
    ensure_eq!(mgr.queued_loads(), 3);
    ctx.origin()?.open_gate("counts");
    expect_status(&ctx.drain(blocker).trace, 200)?;
    let mut last = None;
    for h in queued {
        let f = ctx.drain(h);
        expect_status(&f.trace, 200)?;
        last = Some(f.trace);
    }
    // A slot is given back as its exchange ends, which may trail the last event a little.
    ensure!(
        wait_for(Duration::from_secs(2), || mgr.loads_in_flight() == 0),
        "{} load(s) still in flight after every load ended",
        mgr.loads_in_flight()
    );
    ensure_eq!(mgr.queued_loads(), 0);
    last.ok_or_else(|| "no load ran".into())
}

fn check_two(o1: &Origin, o2: &Origin) -> Result<(), String> {
    check_limit(o1, "the first origin", 2)?;
    check_limit(o2, "the second origin", 2)?;
    let mut intervals = o1.request_intervals();
    intervals.extend(o2.request_intervals());
    let together = max_overlap(&intervals);
    ensure!(
        together == 4,
        "the two origins had at most {together} requests in progress at once; \
         separate limits of 2 should give 4"
    );
    Ok(())
}

fn different_hosts(ctx: &mut Ctx) -> CaseResult {
    let a = ctx.origin_url("/slow/300")?;
    let b = ctx.other_url("/slow/300")?;
    let t = run_two(ctx, a, b)?;
    let (o1, o2) = (ctx.origin.as_ref(), ctx.other.as_ref());
    check_two(o1.ok_or("no origin")?, o2.ok_or("no second origin")?)?;
    Ok(t)
}

/// Starts 8 loads alternating between `a` and `b` at once, with a limit of 2 per host.
fn run_two(ctx: &mut Ctx, a: String, b: String) -> CaseResult {
    let mgr = ctx.manager_with(|m| Ok(m.max_connections_per_host(2)))?;
    let urls: Vec<String> = (0..8)
        .map(|i| if i % 2 == 0 { a.clone() } else { b.clone() })
        .collect();
    let handles = start_all(&mgr, &urls)?;
    last(drain_ok(ctx, handles, b"slow\n")?)
}

fn different_ports(ctx: &mut Ctx) -> CaseResult {
    // The same host name on a second port is another scheduling key.
    let a = ctx.origin_url("/slow/300")?;
    let second = Origin::start().map_err(|e| format!("second origin did not start: {e}"))?;
    let port = second.port();
    ctx.map_host(super::ORIGIN_HOST, port, vec![Ipv4Addr::LOCALHOST.into()]);
    let b = format!("http://{}:{port}/slow/300", super::ORIGIN_HOST);
    let t = run_two(ctx, a, b)?;
    check_two(ctx.origin()?, &second)?;
    Ok(t)
}

fn host_names(ctx: &mut Ctx) -> CaseResult {
    // Two names for one server are two keys, as in Qt: the server sees both limits.
    let a = ctx.origin_url("/slow/300")?;
    let port = ctx.origin()?.port();
    ctx.map_host("alias.test", port, vec![Ipv4Addr::LOCALHOST.into()]);
    let b = format!("http://alias.test:{port}/slow/300");
    let t = run_two(ctx, a, b)?;
    let o = ctx.origin()?;
    ensure_eq!(o.requests().len(), 8);
    ensure!(
        o.max_requests_in_progress() == 4,
        "the server saw at most {} requests in progress; two names with a limit of 2 each should give 4",
        o.max_requests_in_progress()
    );
    ensure!(
        o.stats().max_active() <= 4,
        "the server saw {} connections at once",
        o.stats().max_active()
    );
    Ok(t)
}
