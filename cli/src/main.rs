//! `rh`: fetch with any backend, print the conformance matrix, serve the test origin,
//! benchmark the stacks side by side, and compare them on both.

mod bench;
mod compare;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use conformance_tests::{catalogue, report, Matrix, Outcome};
use resource_handle::{
    Backend, Event, HostOverrides, HttpVersionPref, NetworkAccessManager, NoProxy,
    PersistentCookieJar, Proxy, ProxyConfig, Recorder, RedirectPolicy, RequestBody,
    ResourceRequest, Trace,
};

#[derive(Parser)]
#[command(
    name = "rh",
    version,
    about = "Load resources with libcurl, hyper or ureq, and compare them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch a url with one backend.
    Get(GetArgs),
    /// Run the conformance catalogue on every backend and print the matrix.
    Conformance(ConformanceArgs),
    /// Run the conformance origin server in the foreground (for `rh get`).
    Serve {
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Benchmark every backend against the libraries used directly, reqwest, wrk and curl.
    Bench(bench::BenchArgs),
    /// Run the conformance matrix and a short benchmark, and write one report.
    Compare(compare::CompareArgs),
}

#[derive(Parser)]
struct GetArgs {
    /// Request method (default GET, or POST with -d).
    #[arg(short = 'X', long = "request")]
    method: Option<String>,
    /// Extra header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// User-Agent.
    #[arg(short = 'A', long = "user-agent")]
    user_agent: Option<String>,
    /// Referer.
    #[arg(short = 'e', long = "referer")]
    referer: Option<String>,
    /// Request body: the text itself, or @FILE to stream a file.
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// Write the body to FILE instead of standard output.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Print the response head before the body.
    #[arg(short = 'i', long = "include")]
    include: bool,
    /// Total timeout in seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Connect timeout in seconds.
    #[arg(long = "connect-timeout")]
    connect_timeout: Option<f64>,
    /// Map HOST:PORT to ADDR, like curl (repeatable).
    #[arg(long)]
    resolve: Vec<String>,
    /// Backend: curl, hyper or ureq (default: $RH_BACKEND, else the first compiled of hyper, curl, ureq).
    #[arg(long)]
    backend: Option<String>,
    /// Print the load's trace as one JSON object instead of the body.
    #[arg(long)]
    json: bool,
    /// Follow at most N redirects (default 20).
    #[arg(long = "max-redirects", value_name = "N")]
    max_redirects: Option<u32>,
    /// Do not follow redirects: a 3xx is the response.
    #[arg(long = "no-redirects")]
    no_redirects: bool,
    /// Send no Accept-Encoding of rh's own and write the body as received, undecoded.
    #[arg(long)]
    raw: bool,
    /// Keep an HTTP cache in DIR across runs: fresh responses are answered from it,
    /// stale ones revalidated (the trace's `source` says which).
    #[arg(long = "cache-dir", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// The most the cache in --cache-dir holds, in bytes (default 256 MiB).
    #[arg(long = "cache-max-bytes", value_name = "N", default_value_t = 256 << 20)]
    cache_max_bytes: u64,
    /// How the cache answers: protocol (RFC 9111, the default), reload (always the
    /// network), else-load (any cached response, else the network), dont-load
    /// (any cached response, else fail with not_cached).
    #[arg(long = "cache-policy", value_enum, default_value_t = CacheArg::Protocol)]
    cache_policy: CacheArg,
    /// Read cookies (and HSTS hosts) from FILE before the load and write them back
    /// after it, session cookies included; the file is created when missing.
    #[arg(long = "cookie-jar", value_name = "FILE")]
    cookie_jar: Option<PathBuf>,
    /// Trust the CA certificates of this PEM file too (repeatable).
    #[arg(long = "cacert", value_name = "FILE")]
    cacert: Vec<PathBuf>,
    /// Accept any server certificate. Dangerous: anyone on the path can read
    /// and change the traffic. For test set-ups only.
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Use this proxy: [http|socks5|socks5h]://[USER:PASSWORD@]HOST[:PORT]
    /// (default: $http_proxy, $https_proxy, $all_proxy; "" for none).
    #[arg(short = 'x', long, value_name = "URL")]
    proxy: Option<String>,
    /// Hosts reached without the proxy, comma-separated (default: $no_proxy).
    #[arg(long = "noproxy", value_name = "LIST")]
    noproxy: Option<String>,
    /// Ask for HTTP/2 over https (ALPN), HTTP/1.1 otherwise.
    #[arg(long, conflicts_with = "http2_prior_knowledge")]
    http2: bool,
    /// Speak HTTP/2 without negotiation, also over plain http.
    #[arg(long = "http2-prior-knowledge")]
    http2_prior_knowledge: bool,
    /// The url.
    url: String,
}

/// WebCore's cache policies, as `--cache-policy` names them.
#[derive(Clone, Copy, ValueEnum)]
enum CacheArg {
    Protocol,
    Reload,
    ElseLoad,
    DontLoad,
}

impl CacheArg {
    fn policy(self) -> resource_handle::CachePolicy {
        use resource_handle::CachePolicy as P;
        match self {
            CacheArg::Protocol => P::UseProtocolCachePolicy,
            CacheArg::Reload => P::ReloadIgnoringCacheData,
            CacheArg::ElseLoad => P::ReturnCacheDataElseLoad,
            CacheArg::DontLoad => P::ReturnCacheDataDontLoad,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Junit,
    Markdown,
}

#[derive(Parser)]
struct ConformanceArgs {
    /// Backends to run (repeatable or comma-separated; default: every compiled one).
    #[arg(long, value_delimiter = ',')]
    backend: Vec<String>,
    /// Run only cases whose id contains TEXT.
    #[arg(long)]
    filter: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Get(args) => get(args),
        Command::Conformance(args) => conformance(args),
        Command::Serve { port } => serve(port),
        Command::Bench(args) => bench::bench(args),
        Command::Compare(args) => compare::compare(args),
    };
    match result {
        Ok(code) => code,
        Err(Usage(msg)) => {
            eprintln!("rh: {msg}");
            ExitCode::from(2)
        }
    }
}

/// A command-line usage error (exit status 2).
struct Usage(String);

fn usage(msg: impl std::fmt::Display) -> Usage {
    Usage(msg.to_string())
}

fn pick_backend(name: Option<&str>) -> Result<Backend, Usage> {
    let b = match name {
        Some(n) => n.parse::<Backend>().map_err(usage)?,
        None => Backend::from_env().map_err(usage)?,
    };
    if !b.is_compiled() {
        return Err(usage(format!("the {b} backend is not compiled into rh")));
    }
    Ok(b)
}

fn seconds(s: f64, what: &str) -> Result<Duration, Usage> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| usage(format!("{what} must be a positive number of seconds")))
}

/// The proxy settings of `rh get`: `--proxy` (empty for none) with
/// `--noproxy`, else the environment, as curl does.
fn proxy_config(args: &GetArgs) -> Result<ProxyConfig, Usage> {
    let env = |name: &str| std::env::var(name).ok();
    let config = match args.proxy.as_deref() {
        Some("") => ProxyConfig::None,
        Some(spec) => {
            let proxy = Proxy::parse(spec).map_err(|e| usage(e.message()))?;
            let no_proxy = args
                .noproxy
                .clone()
                .or_else(|| env("no_proxy"))
                .or_else(|| env("NO_PROXY"))
                .unwrap_or_default();
            ProxyConfig::explicit_except(proxy, NoProxy::parse(&no_proxy))
        }
        None => ProxyConfig::from_vars(|name| {
            if name.eq_ignore_ascii_case("no_proxy") {
                if let Some(list) = &args.noproxy {
                    return Some(list.clone());
                }
            }
            env(name)
        })
        .map_err(|e| usage(e.message()))?,
    };
    Ok(config)
}

fn get(args: GetArgs) -> Result<ExitCode, Usage> {
    let backend = pick_backend(args.backend.as_deref())?;
    let mut overrides = HostOverrides::default();
    for entry in &args.resolve {
        let (h, p, a) = HostOverrides::parse_entry(entry).map_err(usage)?;
        overrides.insert(&h, p, a);
    }
    let method = args
        .method
        .clone()
        .unwrap_or_else(|| if args.data.is_some() { "POST" } else { "GET" }.into());
    let mut b = ResourceRequest::builder(&method, &args.url);
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| usage(format!("header {h:?} is not `Name: value`")))?;
        b = b.header(name.trim(), value.trim_start());
    }
    if let Some(ua) = &args.user_agent {
        b = b.user_agent(ua);
    }
    if let Some(r) = &args.referer {
        b = b.referrer(r);
    }
    if let Some(d) = &args.data {
        b = match d.strip_prefix('@') {
            Some(path) => b.body(RequestBody::File(path.into())),
            None => b.body(d.clone()),
        };
    }
    if let Some(t) = args.timeout {
        b = b.timeout(seconds(t, "--timeout")?);
    }
    if let Some(t) = args.connect_timeout {
        b = b.connect_timeout(seconds(t, "--connect-timeout")?);
    }
    if let Some(n) = args.max_redirects {
        b = b.max_redirects(n);
    }
    if args.no_redirects {
        b = b.redirect_policy(RedirectPolicy::None);
    }
    if args.raw {
        b = b.decode_content(false);
    }
    b = b.cache_policy(args.cache_policy.policy());
    if args.http2 {
        b = b.http_version(HttpVersionPref::Http2);
    }
    if args.http2_prior_knowledge {
        b = b.http_version(HttpVersionPref::Http2PriorKnowledge);
    }
    let request = match b.build() {
        Ok(r) => r,
        Err(e) => {
            // A request that does not build is a load that failed before the wire.
            if args.json {
                println!(
                    "{}",
                    Trace::for_error(backend.name(), &args.url, &e).to_json()
                );
            } else {
                eprintln!("rh: {e}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let mut builder = NetworkAccessManager::builder()
        .host_overrides(overrides)
        .proxy(proxy_config(&args)?)
        .danger_accept_invalid_certs(args.insecure);
    for path in &args.cacert {
        let pem = std::fs::read(path)
            .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
        builder = builder
            .add_root_certificates_pem(&pem)
            .map_err(|e| usage(format!("{}: {}", path.display(), e.message())))?;
    }
    if let Some(dir) = &args.cache_dir {
        match resource_handle::DiskCache::open(dir, args.cache_max_bytes) {
            Ok(cache) => builder = builder.cache(std::sync::Arc::new(cache)),
            Err(e) => {
                eprintln!("rh: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    let jar = match &args.cookie_jar {
        Some(path) => match PersistentCookieJar::open(path) {
            // One run of rh is one session: its session cookies go on in the next run, as with curl.
            Ok(j) => Some(Arc::new(j.keep_session_cookies(true))),
            Err(e) => {
                eprintln!("rh: {e}");
                return Ok(ExitCode::from(1));
            }
        },
        None => None,
    };
    if let Some(jar) = &jar {
        builder = builder.cookie_jar(jar.clone());
    }
    let nam = match builder.build(backend) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("rh: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut handle = nam.load(request);
    let mut rec = Recorder::new(backend.name(), &handle);
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Box::new(io::BufWriter::new(f)),
            Err(e) => {
                eprintln!("rh: cannot create {}: {e}", path.display());
                return Ok(ExitCode::from(1));
            }
        },
        None if args.json => Box::new(io::sink()),
        None => Box::new(io::stdout().lock()),
    };
    // A progress bar when the body goes to a file and a person is watching.
    let bar = (args.output.is_some() && !args.json && io::stderr().is_terminal())
        .then(indicatif::ProgressBar::no_length);
    let mut failed = None;
    while let Some(ev) = handle.next_event_blocking() {
        rec.observe(&ev);
        if let Some(bar) = &bar {
            progress(bar, &ev);
        }
        match &ev {
            Event::Response(r) if args.include && !args.json => {
                let mut head = format!(
                    "{} {} {}\r\n",
                    r.version_str(),
                    r.status().as_u16(),
                    r.reason()
                );
                for (n, v) in r.headers() {
                    head.push_str(&format!(
                        "{}: {}\r\n",
                        n,
                        String::from_utf8_lossy(v.as_bytes())
                    ));
                }
                head.push_str("\r\n");
                if let Err(e) = io::stdout().write_all(head.as_bytes()) {
                    eprintln!("rh: {e}");
                }
            }
            Event::Data(d) => {
                if let Err(e) = out.write_all(d) {
                    eprintln!("rh: write failed: {e}");
                    handle.cancel();
                }
            }
            Event::Failed(e) => failed = Some(e.clone()),
            _ => {}
        }
    }
    let _ = out.flush();
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let trace = rec.finish();
    // The jar writes itself after each change; this reports a write that failed.
    let jar_failed = match jar.as_ref().map(|j| j.save()) {
        Some(Err(e)) => {
            eprintln!("rh: {e}");
            true
        }
        _ => false,
    };
    if args.json {
        println!("{}", trace.to_json());
    } else if let Some(e) = &failed {
        eprintln!("rh: {e}");
    }
    Ok(ExitCode::from(if failed.is_some() || jar_failed {
        1
    } else {
        0
    }))
}

/// Updates the download bar: speed and ETA once the length is known.
fn progress(bar: &indicatif::ProgressBar, ev: &Event) {
    match ev {
        Event::Response(r) => {
            let style = match r.expected_content_length() {
                Some(len) => {
                    bar.set_length(len);
                    indicatif::ProgressStyle::with_template(
                        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                }
                None => indicatif::ProgressStyle::with_template(
                    "{spinner} {bytes} {bytes_per_sec} {elapsed}",
                ),
            };
            if let Ok(style) = style {
                bar.set_style(style);
            }
        }
        Event::DownloadProgress { received, .. } => bar.set_position(*received),
        _ => {}
    }
}

fn conformance(args: ConformanceArgs) -> Result<ExitCode, Usage> {
    let backends = if args.backend.is_empty() {
        Backend::compiled()
    } else {
        let mut v = Vec::new();
        for name in &args.backend {
            v.push(pick_backend(Some(name))?);
        }
        v
    };
    let cases = catalogue();
    let show_progress = io::stderr().is_terminal();
    let matrix = Matrix::run(&cases, &backends, args.filter.as_deref(), |i, n, r| {
        if show_progress {
            let state = if r.passed() { "ok" } else { "FAILED" };
            eprint!("\r\x1b[2K[{i}/{n}] {} {state}", r.case.id);
            if i == n {
                eprintln!();
            }
        }
    });
    let text = match args.format {
        Format::Table => report::table(&matrix),
        Format::Json => format!("{:#}\n", report::json(&matrix)),
        Format::Junit => report::junit(&matrix),
        Format::Markdown => report::markdown(&matrix),
    };
    print!("{text}");
    if matrix.cases.is_empty() {
        eprintln!("rh: no case matches the filter");
        return Ok(ExitCode::from(1));
    }
    let failed = matrix.cases.iter().any(|c| {
        !c.passed()
            || c.cells
                .values()
                .any(|x| matches!(x.outcome, Outcome::Fail(_)))
    });
    Ok(ExitCode::from(if failed { 1 } else { 0 }))
}

fn serve(port: u16) -> Result<ExitCode, Usage> {
    let origin = match conformance_tests::servers::Origin::start_on(port) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rh: cannot start the origin: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    println!("origin listening on http://{}", origin.addr());
    println!("try: rh get --json http://{}/echo", origin.addr());
    loop {
        std::thread::park();
    }
}
