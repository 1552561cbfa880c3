//! The fault suite: deliveries go on while the database, the receiver or the process fails.
//!
//! Every scenario runs real `outhook serve` processes, publishes throughout from a publisher
//! that sends each batch again (same event ids) until it is acknowledged with 202, and
//! asserts of every webhook, from what its receiver recorded:
//! - **nothing acknowledged is lost**: every acknowledged event reached the receiver in a
//!   request it answered 2xx;
//! - **order is kept**: each request's events are in publish order, and each delivery that
//!   is not a repeat starts after everything delivered before it;
//! - **repeats carry their original identity**: a delivery id always comes with the events
//!   of its first sending, and an event is only ever sent under one delivery id;
//! - **recovery needs no operator**: once the fault is over, every webhook is `active` with
//!   nothing pending, and the test never resumes, patches or restarts a webhook.
//!
//! Every loop is bounded in count and in time; the whole file takes about a minute.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pg_cluster::PgCluster;
use common::receiver::{Received, Receiver, flaky_fails};
use common::{ADMIN_TOKEN, Backend, TestDb, call, event, webhook};
use serde_json::{Value, json};

/// A real `outhook serve` process. Its log goes to a file that is removed when the test
/// passes and named in the failure otherwise.
struct Instance {
    child: Option<Child>,
    base: String,
    db_url: String,
    args: Vec<String>,
    log: PathBuf,
}

impl Instance {
    async fn start(db_url: &str, args: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "outhook-faults-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let mut instance = Self {
            child: None,
            base: String::new(),
            db_url: db_url.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            log,
        };
        instance.run().await;
        instance
    }

    /// Starts the process (again) on a free port and waits until it is ready.
    async fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let bind = format!("127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_outhook"))
            .args(["serve", "--bind", &bind, "--database-url", &self.db_url])
            .args([
                "--admin-token",
                ADMIN_TOKEN,
                "--allow-private",
                "127.0.0.0/8",
            ])
            .args(&self.args)
            .env("RUST_LOG", "outhook=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the outhook binary starts");
        self.base = format!("http://{bind}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if let Some(exit) = child.try_wait().unwrap() {
                panic!(
                    "outhook exited with {exit} at start; log: {}",
                    self.log.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "outhook did not become ready within 30 s; log: {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no hand-over of leases.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
        child.wait().unwrap();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn admin(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
) -> reqwest::RequestBuilder {
    client
        .request(method, url)
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(10))
}

/// Where publishes go: the bases of the instances that are up (a killed one is taken out).
#[derive(Clone, Default)]
struct Targets(Arc<Mutex<Vec<String>>>);

impl Targets {
    fn set(&self, bases: Vec<String>) {
        *self.0.lock().unwrap() = bases;
    }
    fn pick(&self, n: usize) -> Option<String> {
        let bases = self.0.lock().unwrap();
        (!bases.is_empty()).then(|| bases[n % bases.len()].clone())
    }
}

/// What the publisher got acknowledged, in publish order (which is log order: one request
/// at a time, each acknowledged before the next is sent).
#[derive(Default)]
struct Ledger {
    order: Vec<String>,
    /// Publish requests that did not get a 202 and were sent again.
    refused: usize,
    /// How those were answered: status (0 when there was no answer), how many, the longest
    /// wait for the answer.
    refusals: std::collections::BTreeMap<u16, (usize, Duration)>,
}

impl Ledger {
    fn position(&self) -> HashMap<&str, usize> {
        self.order
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect()
    }
}

/// How the publisher runs: `rounds` requests of `per_request` events, `pause` apart, until
/// stopped or done. A request that fails (connection refused, 5xx, timeout) is sent again
/// with the same events, to the next live instance, for at most `give_up` in all.
struct PublishPlan {
    rounds: usize,
    per_request: usize,
    pause: Duration,
    give_up: Duration,
}

/// Publishes in the background; `stop` ends it after the request in hand.
struct Publisher {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Ledger>,
}

impl Publisher {
    fn start(targets: Targets, plan: PublishPlan) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut ledger = Ledger::default();
            let mut sent = 0usize;
            for round in 0..plan.rounds {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let batch: Vec<Value> = (0..plan.per_request)
                    .map(|i| event("entityCreated", "table", &format!("r{round}-{i}")))
                    .collect();
                let deadline = Instant::now() + plan.give_up;
                loop {
                    sent += 1;
                    let asked = Instant::now();
                    let answer = match targets.pick(sent) {
                        Some(base) => {
                            let request = admin(
                                &client,
                                reqwest::Method::POST,
                                format!("{base}/api/v1/events"),
                            )
                            .json(&batch);
                            Some(call_quietly(request).await)
                        }
                        None => None,
                    };
                    if let Some((202, body)) = answer {
                        let ids = body["eventIds"].as_array().expect("eventIds");
                        assert_eq!(ids.len(), plan.per_request, "{body}");
                        ledger
                            .order
                            .extend(ids.iter().map(|v| v.as_str().unwrap().to_owned()));
                        break;
                    }
                    ledger.refused += 1;
                    let status = answer.as_ref().map_or(0, |(status, _)| *status);
                    let seen = ledger.refusals.entry(status).or_default();
                    *seen = (seen.0 + 1, seen.1.max(asked.elapsed()));
                    assert!(
                        Instant::now() < deadline,
                        "round {round}: no instance acknowledged the publish within {:?} (last answer: {answer:?})",
                        plan.give_up
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tokio::time::sleep(plan.pause).await;
            }
            ledger
        });
        Self { stop, task }
    }

    /// Stops after the request in hand.
    async fn finish(self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the publisher does not panic")
    }

    /// Waits for the publisher to send all its rounds (bounded by its plan).
    async fn finish_when_done(self) -> Ledger {
        self.task.await.expect("the publisher does not panic")
    }
}

/// Status and JSON body, or `(0, error)` when the request did not get an answer.
async fn call_quietly(request: reqwest::RequestBuilder) -> (u16, Value) {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// The event ids of one request, in body order.
fn event_ids(request: &Received) -> Vec<String> {
    let items = match request.json() {
        Value::Array(items) => items,
        one => vec![one],
    };
    items
        .iter()
        .map(|e| e["eventId"].as_str().expect("an eventId").to_owned())
        .collect()
}

/// What one webhook's receiver got, judged against the ledger. Panics on a broken order or
/// a repeat under another identity; returns the counts for the other assertions.
#[derive(Debug, Default)]
struct Judgement {
    /// Events in at least one request the receiver answered 2xx.
    delivered: HashSet<String>,
    /// Requests the receiver did not answer 2xx.
    failed: usize,
    /// Requests that repeated an earlier delivery id.
    repeats: usize,
}

fn judge(path: &str, requests: &[Received], position: &HashMap<&str, usize>) -> Judgement {
    let mut first_sending: HashMap<String, Vec<String>> = HashMap::new();
    let mut sent_under: HashMap<String, String> = HashMap::new();
    let mut newest: Option<usize> = None;
    let mut out = Judgement::default();
    for (n, request) in requests.iter().enumerate() {
        let ids = event_ids(request);
        let delivery = request
            .header("x-outhook-delivery-id")
            .expect("every request has a delivery id")
            .to_owned();
        let at: Vec<usize> = ids
            .iter()
            .map(|id| {
                *position.get(id.as_str()).unwrap_or_else(|| {
                    panic!("{path}: request {n} carries {id}, never acknowledged")
                })
            })
            .collect();
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "{path}: request {n} has its events out of order: {at:?}"
        );
        match first_sending.get(&delivery) {
            Some(first) => {
                assert_eq!(
                    first, &ids,
                    "{path}: request {n} repeats delivery {delivery} with other events"
                );
                out.repeats += 1;
            }
            None => {
                for id in &ids {
                    if let Some(earlier) = sent_under.insert(id.clone(), delivery.clone()) {
                        panic!(
                            "{path}: event {id} went out under delivery {earlier}, then under {delivery} (request {n})"
                        );
                    }
                }
                if let (Some(newest), Some(&first)) = (newest, at.first()) {
                    assert!(
                        first > newest,
                        "{path}: request {n} (a new delivery) starts at event #{first}, not after #{newest} delivered before it"
                    );
                }
                newest = at.last().copied().or(newest);
                first_sending.insert(delivery, ids.clone());
            }
        }
        if (200..300).contains(&request.status) {
            out.delivered.extend(ids);
        } else {
            out.failed += 1;
        }
    }
    out
}

/// A webhook of a scenario: its receiver path and its id.
struct Hook {
    path: &'static str,
    id: String,
}

async fn create_hooks(
    base: &str,
    rx: &Receiver,
    hooks: &[(&'static str, u32)],
    timeout_s: u32,
) -> Vec<Hook> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for (path, batch) in hooks {
        let mut body = webhook(
            &format!("fault{}", path.replace('/', "-")),
            &rx.url(path),
            *batch,
            json!([{"eventType": "entityCreated", "entities": ["table"]}]),
        );
        body["webhookConfig"]["timeout"] = json!(timeout_s);
        let (status, created) = call(
            admin(
                &client,
                reqwest::Method::POST,
                format!("{base}/api/v1/webhooks"),
            )
            .json(&body),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        out.push(Hook {
            path,
            id: created["id"].as_str().unwrap().to_owned(),
        });
    }
    out
}

/// Waits (at most `within`) until every acknowledged event reached every webhook's receiver
/// in a 2xx answer and every webhook is `active` with nothing pending, checking order and
/// repeats all along; returns each path's judgement.
async fn assert_recovered(
    base: &str,
    rx: &Receiver,
    hooks: &[Hook],
    ledger: &Ledger,
    within: Duration,
    logs: &[&Instance],
) -> HashMap<&'static str, Judgement> {
    let client = reqwest::Client::new();
    let position = ledger.position();
    let deadline = Instant::now() + within;
    let logs: Vec<String> = logs.iter().map(|i| i.log.display().to_string()).collect();
    let mut out = HashMap::new();
    for hook in hooks {
        loop {
            let judgement = judge(hook.path, &rx.arrivals(hook.path), &position);
            let missing = ledger
                .order
                .iter()
                .filter(|id| !judgement.delivered.contains(*id))
                .count();
            let (status, state) = call_quietly(admin(
                &client,
                reqwest::Method::GET,
                format!("{base}/api/v1/webhooks/{}/status", hook.id),
            ))
            .await;
            if missing == 0
                && status == 200
                && state["status"] == "active"
                && state["pendingEvents"] == 0
            {
                out.insert(hook.path, judgement);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {missing} of {} acknowledged events not delivered, or not recovered, within {within:?}: {status} {state}; logs: {logs:?}",
                hook.path,
                ledger.order.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    out
}

/// Retry delays for the scenarios whose receiver fails: short, on the real clock, and more
/// steps than failures in a row the receiver will answer (checked by each scenario).
const RETRY_SCHEDULE: &str =
    "20ms,40ms,80ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms";
const RETRY_STEPS: usize = 16;

/// b. A receiver failing half of its requests (500) gets everything, in order, each repeat
/// under its delivery id, with the real retry schedule (shortened) on the real clock.
async fn a_receiver_failing_half_of_its_requests(backend: Backend) {
    outhook::app::install_crypto_provider();
    let db = TestDb::new(backend).await;
    let instance = Instance::start(
        &db.url,
        &[
            "--poll-interval",
            "100ms",
            "--retry-schedule",
            RETRY_SCHEDULE,
        ],
    )
    .await;
    let rx = Receiver::start().await;
    let paths = [("/flaky1", 1), ("/flaky4", 4)];
    // Each path fails the same requests on every run; none fails more often in a row than
    // the schedule has retries.
    let seeds = [11u64, 12];
    for ((path, _), seed) in paths.iter().zip(seeds) {
        let longest = (0..2000u64)
            .map(|n| flaky_fails(seed, 500, n))
            .fold((0, 0), |(run, max), fails| {
                let run = if fails { run + 1 } else { 0 };
                (run, max.max(run))
            })
            .1;
        assert!(
            longest < RETRY_STEPS,
            "seed {seed}: {longest} failures in a row"
        );
        rx.fail_share(path, 500, 500, seed);
    }
    let hooks = create_hooks(&instance.base, &rx, &paths, 5).await;
    let targets = Targets::default();
    targets.set(vec![instance.base.clone()]);
    let publisher = Publisher::start(
        targets,
        PublishPlan {
            rounds: 40,
            per_request: 3,
            pause: Duration::from_millis(50),
            give_up: Duration::from_secs(10),
        },
    );
    let ledger = publisher.finish_when_done().await;
    assert_eq!(ledger.order.len(), 120);
    let judged = assert_recovered(
        &instance.base,
        &rx,
        &hooks,
        &ledger,
        Duration::from_secs(60),
        &[&instance],
    )
    .await;
    for (path, judgement) in &judged {
        // The fault happened: about half the requests failed and went again.
        let sent = rx.arrivals(path).len();
        assert!(
            judgement.failed * 4 >= sent && judgement.repeats >= judgement.failed,
            "{path}: {} failures and {} repeats in {sent} requests",
            judgement.failed,
            judgement.repeats
        );
    }
}

/// c. A receiver that does not answer (the webhook's timeout is 1 s) for 5 s, then answers:
/// the held batch goes again under its delivery id and everything follows in order; another
/// webhook keeps receiving meanwhile.
async fn a_receiver_that_does_not_answer_for_a_while(backend: Backend) {
    outhook::app::install_crypto_provider();
    let db = TestDb::new(backend).await;
    let instance = Instance::start(
        &db.url,
        &[
            "--poll-interval",
            "100ms",
            "--retry-schedule",
            RETRY_SCHEDULE,
        ],
    )
    .await;
    let rx = Receiver::start().await;
    let paths = [("/silent1", 1), ("/silent5", 5), ("/steady", 1)];
    let hooks = create_hooks(&instance.base, &rx, &paths, 1).await;
    let targets = Targets::default();
    targets.set(vec![instance.base.clone()]);
    let publisher = Publisher::start(
        targets,
        PublishPlan {
            rounds: 60,
            per_request: 2,
            pause: Duration::from_millis(100),
            give_up: Duration::from_secs(10),
        },
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Silent: each request is held for 3 s (three times the timeout), and would then be
    // refused, so a request outhook gave up on is not counted as delivered either.
    for path in ["/silent1", "/silent5"] {
        rx.delay(path, Duration::from_secs(3));
        rx.respond(path, 503);
    }
    let silent_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let steady_during = rx
        .arrivals("/steady")
        .iter()
        .filter(|r| r.at > silent_from)
        .count();
    for path in ["/silent1", "/silent5"] {
        rx.delay(path, Duration::ZERO);
        rx.respond(path, 200);
    }
    let ledger = publisher.finish_when_done().await;
    assert_eq!(ledger.order.len(), 120);
    assert!(
        steady_during >= 10,
        "/steady got {steady_during} requests while the others were silent"
    );
    let judged = assert_recovered(
        &instance.base,
        &rx,
        &hooks,
        &ledger,
        Duration::from_secs(60),
        &[&instance],
    )
    .await;
    for path in ["/silent1", "/silent5"] {
        assert!(
            judged[path].failed >= 2 && judged[path].repeats >= 2,
            "{path}: the silence was not met: {:?} failed, {:?} repeats",
            judged[path].failed,
            judged[path].repeats
        );
    }
}

/// d. Instances killed with SIGKILL again and again while events flow: on PostgreSQL two
/// instances share the webhooks and each is killed in turn (5 kills), on SQLite the one
/// instance is killed 5 times; each comes back at once. A short lease keeps it bounded.
async fn instances_killed_again_and_again(backend: Backend) {
    outhook::app::install_crypto_provider();
    let db = TestDb::new(backend).await;
    let args = ["--poll-interval", "100ms", "--lease-ttl", "2s"];
    let mut instances = vec![Instance::start(&db.url, &args).await];
    if backend == Backend::Postgres {
        instances.push(Instance::start(&db.url, &args).await);
    }
    let rx = Receiver::start().await;
    let paths = [("/k1", 1), ("/k2", 1), ("/k5", 5), ("/k10", 10)];
    for (path, _) in paths {
        // Keeps deliveries in flight when a kill comes.
        rx.delay(path, Duration::from_millis(2));
    }
    let hooks = create_hooks(&instances[0].base, &rx, &paths, 5).await;
    let targets = Targets::default();
    targets.set(instances.iter().map(|i| i.base.clone()).collect());
    let publisher = Publisher::start(
        targets.clone(),
        PublishPlan {
            rounds: 2000,
            per_request: 5,
            pause: Duration::from_millis(20),
            give_up: Duration::from_secs(20),
        },
    );
    let arrived = || -> usize { paths.iter().map(|(p, _)| rx.arrivals(p).len()).sum() };
    // How long after each kill the next request reached a receiver.
    let mut gaps = Vec::new();
    for kill in 0..5 {
        // Every kill comes while deliveries flow: 20 requests since the last restart.
        let from = arrived();
        let deadline = Instant::now() + Duration::from_secs(20);
        while arrived() < from + 20 {
            assert!(
                Instant::now() < deadline,
                "kill {kill}: deliveries did not resume within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let victim = kill % instances.len();
        instances[victim].kill();
        let killed_at = Instant::now();
        let after_kill = arrived();
        targets.set(
            instances
                .iter()
                .filter(|i| i.child.is_some())
                .map(|i| i.base.clone())
                .collect(),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        instances[victim].run().await;
        targets.set(instances.iter().map(|i| i.base.clone()).collect());
        let deadline = Instant::now() + Duration::from_secs(20);
        while arrived() == after_kill {
            assert!(
                Instant::now() < deadline,
                "kill {kill}: nothing delivered since"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        gaps.push(killed_at.elapsed());
    }
    // A restarted instance resumes at once, so the kills can be over within seconds:
    // publishing goes on until the run carries enough events to judge (each event reaches
    // /k1 in a request of its own; a few may come twice).
    let deadline = Instant::now() + Duration::from_secs(60);
    while rx.arrivals("/k1").len() < 520 {
        assert!(Instant::now() < deadline, "fewer than 500 events published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ledger = publisher.finish().await;
    assert!(
        ledger.order.len() >= 500,
        "only {} events published",
        ledger.order.len()
    );
    let logs: Vec<&Instance> = instances.iter().collect();
    let judged = assert_recovered(
        &instances[0].base,
        &rx,
        &hooks,
        &ledger,
        Duration::from_secs(60),
        &logs,
    )
    .await;
    let repeats: usize = judged.values().map(|j| j.repeats).sum();
    eprintln!(
        "{backend:?}: {} events, publishes sent again (status: count, longest wait): {:?}, {repeats} repeated deliveries, first delivery after each kill: {gaps:?}",
        ledger.order.len(),
        ledger.refusals
    );
}

/// Waits (at most 30 s) until 20 more requests reached the receiver on `paths`.
async fn deliveries_go_on(rx: &Receiver, paths: &[(&str, u32)], what: &str, log: &Instance) {
    let arrived = || -> usize { paths.iter().map(|(p, _)| rx.arrivals(p).len()).sum() };
    let from = arrived();
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrived() < from + 20 {
        assert!(
            Instant::now() < deadline,
            "deliveries did not go on {what} within 30 s; log: {}",
            log.log.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// a. PostgreSQL restarted, then stopped for 15 s, while events are published and delivered:
/// publishes refused meanwhile go again until acknowledged, and everything acknowledged
/// arrives once the database is back, with no action on outhook. The cluster is the test's
/// own, on a port of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_and_stopped_for_15_s() {
    outhook::app::install_crypto_provider();
    let cluster = PgCluster::create();
    let db = cluster.database().await;
    let instance = Instance::start(&db.url, &["--poll-interval", "100ms"]).await;
    let rx = Receiver::start().await;
    let paths = [("/pg1", 1), ("/pg5", 5), ("/pg10", 10)];
    let hooks = create_hooks(&instance.base, &rx, &paths, 5).await;
    let targets = Targets::default();
    targets.set(vec![instance.base.clone()]);
    let publisher = Publisher::start(
        targets,
        PublishPlan {
            rounds: 1000,
            per_request: 5,
            pause: Duration::from_millis(50),
            // The outage, and the time to notice the database is back.
            give_up: Duration::from_secs(45),
        },
    );
    deliveries_go_on(&rx, &paths, "at first", &instance).await;
    // A restart as `pg_ctlcluster restart` does it: stopped (sessions ended), started again.
    // The cluster's commands wait for the server; the runtime's other thread goes on.
    tokio::task::block_in_place(|| {
        cluster.stop();
        cluster.start();
    });
    let restarted = Instant::now();
    deliveries_go_on(&rx, &paths, "after the restart", &instance).await;
    let back_after_restart = restarted.elapsed();
    tokio::task::block_in_place(|| cluster.stop());
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    tokio::task::block_in_place(|| cluster.start());
    let started = Instant::now();
    deliveries_go_on(&rx, &paths, "after the outage", &instance).await;
    let back_after_outage = started.elapsed();
    let ledger = publisher.finish().await;
    assert!(
        ledger.refused > 0,
        "no publish was refused in the {:?} outage",
        started - stopped
    );
    assert_recovered(
        &instance.base,
        &rx,
        &hooks,
        &ledger,
        Duration::from_secs(60),
        &[&instance],
    )
    .await;
    eprintln!(
        "{} events, publishes sent again (status: count, longest wait): {:?}; deliveries went on {back_after_restart:?} after the restart, {back_after_outage:?} after the database was back",
        ledger.order.len(),
        ledger.refusals
    );
}

on_both_backends!(
    a_receiver_failing_half_of_its_requests,
    a_receiver_that_does_not_answer_for_a_while,
    instances_killed_again_and_again,
);

/// The checks themselves: a stream that keeps the guarantees passes, each broken one fails.
#[test]
fn the_checks_catch_each_broken_guarantee() {
    let ledger = Ledger {
        order: ["e0", "e1", "e2"].map(str::to_owned).to_vec(),
        ..Ledger::default()
    };
    let position = ledger.position();
    let request = |delivery: &str, ids: &[&str], status: u16| {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-outhook-delivery-id", delivery.parse().unwrap());
        let body: Vec<Value> = ids.iter().map(|id| json!({"eventId": id})).collect();
        Received {
            path: "/p".to_owned(),
            query: None,
            headers,
            body: serde_json::to_vec(&body).unwrap().into(),
            at: Instant::now(),
            status,
        }
    };
    let kept = judge(
        "/p",
        &[
            request("d1", &["e0", "e1"], 500),
            request("d1", &["e0", "e1"], 200),
            request("d2", &["e2"], 200),
        ],
        &position,
    );
    assert_eq!((kept.failed, kept.repeats, kept.delivered.len()), (1, 1, 3));
    let broken = [
        (
            "a repeat with other events",
            vec![
                request("d1", &["e0", "e1"], 500),
                request("d1", &["e0"], 200),
            ],
        ),
        (
            "an event sent again under a new delivery id",
            vec![request("d1", &["e0"], 500), request("d2", &["e0"], 200)],
        ),
        (
            "a new delivery going back in the log",
            vec![request("d1", &["e1"], 200), request("d2", &["e0"], 200)],
        ),
        (
            "a request with its events out of order",
            vec![request("d1", &["e1", "e0"], 200)],
        ),
        (
            "an event never acknowledged",
            vec![request("d1", &["x"], 200)],
        ),
    ];
    for (what, requests) in broken {
        let caught = std::panic::catch_unwind(|| judge("/p", &requests, &position));
        assert!(caught.is_err(), "not caught: {what}");
    }
}
