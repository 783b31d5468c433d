//! The ledger on real infrastructure: PostgreSQL (standing in for CockroachDB, and the read
//! model) and NATS JetStream on 127.0.0.1, never mocks. Each test has databases and a stream of
//! its own; the test that stops NATS runs a nats-server of its own.

#![cfg(not(any(madsim, feature = "sim")))]

mod support;

use std::time::Duration;

use futures::future::join_all;
use models::ledger::EncodedEvent;
use serde_json::json;
use support::{PrivateNats, TestLedger, dec, metric, scrape, test_config};

/// Goal: optimistic locking lets exactly as many withdrawals through as the balance covers.
/// Method: 100 concurrent withdrawals of 10.00 from 100.00; count answers; check the event
/// store and, after catch-up, the read model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_withdrawals_exactly_ten_succeed() {
    let t = TestLedger::start().await;
    t.create_account("W-100", "100.00", "USD").await;
    let body = r#"{"account_id":"W-100","amount":10.00}"#;
    let answers = join_all((0..100).map(|_| t.command("withdraw", body, None))).await;
    let created = answers.iter().filter(|(s, _, _)| *s == 201).count();
    let refused = answers.iter().filter(|(s, _, _)| *s == 409).count();
    assert_eq!((created, refused), (10, 90), "{:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    for (status, body, _) in &answers {
        if *status == 409 {
            assert_eq!(body["error"], "insufficient_funds", "{body}");
        }
    }
    assert_eq!(t.store_balance("W-100").await, (dec("0.00"), 11));
    let view = t.caught_up("W-100", 11).await;
    assert_eq!(view["balance"], "0.00");
    t.cleanup().await;
}

/// Goal: the double-spend of spec 001 scenario 5 / spec 002 test 2.
/// Method: two concurrent withdrawals of 100.00 from 100.00.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn double_spend_one_wins_one_refused() {
    let t = TestLedger::start().await;
    t.create_account("DS-1", "100.00", "USD").await;
    let body = r#"{"account_id":"DS-1","amount":100.00}"#;
    let (a, b) = tokio::join!(t.command("withdraw", body, None), t.command("withdraw", body, None));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [201, 409]);
    assert_eq!(t.store_balance("DS-1").await, (dec("0"), 2));
    t.cleanup().await;
}

/// Goal: spec 002 test 1: a processor that is down while deposits happen catches up exactly.
/// Method: 200 deposits of 1.00; the processor is killed after 50 and restarted after 150.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processor_stopped_during_deposits_catches_up_exactly() {
    let mut t = TestLedger::start().await;
    t.create_account("P-1", "0", "USD").await;
    let body = r#"{"account_id":"P-1","amount":"1.00"}"#;
    for i in 0..200 {
        if i == 50 {
            t.stop_processor().await;
        }
        if i == 150 {
            t.start_processor();
        }
        let (status, answer, _) = t.command("deposit", body, None).await;
        assert_eq!(status, 201, "{answer}");
    }
    assert_eq!(t.store_balance("P-1").await, (dec("200.00"), 201));
    let view = t.caught_up("P-1", 201).await;
    assert_eq!(view["balance"], "200.00");
    assert_eq!(view["version"], 201);
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions WHERE account_id = 'P-1'")
        .fetch_one(t.ledger.read.pool())
        .await
        .unwrap();
    assert_eq!(applied, 201, "each event projected exactly once");
    t.cleanup().await;
}

/// Goal: spec 000 scenario 2: with NATS down, writes still succeed; after it restarts the
/// read model catches up and nothing is lost. /health names NATS as down meanwhile.
/// Method: a private nats-server, killed mid-way through 60 deposits and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_down_writes_continue_then_read_model_catches_up() {
    let mut nats = PrivateNats::start();
    let t = TestLedger::start_with(test_config(&nats.url())).await;
    t.create_account("N-1", "10.00", "EUR").await;
    let body = r#"{"account_id":"N-1","amount":"2.50"}"#;
    for _ in 0..20 {
        assert_eq!(t.command("deposit", body, None).await.0, 201);
    }
    nats.stop();
    for _ in 0..40 {
        let (status, answer, _) = t.command("deposit", body, None).await;
        assert_eq!(status, 201, "writes continue while NATS is down: {answer}");
    }
    // The client notices the outage within its ping and request timeouts.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, report) = t.health(false).await;
        if report["dependencies"]["nats"]["state"] == "down" {
            assert_eq!(status, 200, "NATS is not critical for writes: {report}");
            assert_eq!(report["status"], "degraded");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "health never showed NATS down: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The read model may be behind, even without the account yet (the relay may not have
    // published its opening before NATS stopped: 404); it is never ahead of the store.
    let (status, stale) = t.balance("N-1", None).await;
    let version = match status {
        200 => stale["version"].as_u64().expect("a balance names its version"),
        404 if stale["error"] == "account_not_found" => 0,
        other => panic!("a read while NATS is down answered {other}: {stale}"),
    };
    assert!(version <= 61, "the read model is ahead of the store: {stale}");
    nats.restart();
    assert_eq!(t.store_balance("N-1").await, (dec("160.00"), 61));
    let view = t.caught_up("N-1", 61).await;
    assert_eq!(view["balance"], "160.00");
    t.cleanup().await;
}

/// Goal: an operator sees a NATS outage on `/metrics` (issue 11): the outbox backlog and the
/// read model's lag climb while NATS is down and return to 0 after it restarts; the relay's
/// failed publishes are counted; requests are counted by route and status.
/// Method: a private nats-server stopped after 10 deposits; 30 more deposits in two waves;
/// scrape the command API and the query API (which also run the relay and the processor).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_show_a_nats_outage_and_its_end() {
    let mut nats = PrivateNats::start();
    let t = TestLedger::start_with(test_config(&nats.url())).await;
    t.create_account("M-1", "10.00", "EUR").await;
    let body = r#"{"account_id":"M-1","amount":"1.00"}"#;
    for _ in 0..10 {
        assert_eq!(t.command("deposit", body, None).await.0, 201);
    }
    t.caught_up("M-1", 11).await;
    // Samples until `check` holds for both scrapes, or fails after the bound.
    let until = |what: &'static str, check: fn(f64, f64) -> bool| {
        let t = &t;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let api = scrape(&t.http, t.api).await;
                let query = scrape(&t.http, t.query).await;
                let backlog = metric(&api, "ledger_outbox_backlog").expect("the API shows the outbox backlog");
                let lag = metric(&query, "ledger_read_model_lag_positions").expect("the query API shows the lag");
                if check(backlog, lag) {
                    return (backlog, lag, api, query);
                }
                assert!(std::time::Instant::now() < deadline, "{what}: backlog {backlog}, lag {lag}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    until("caught up before the outage", |backlog, lag| backlog == 0.0 && lag == 0.0).await;
    nats.stop();
    for _ in 0..15 {
        assert_eq!(t.command("deposit", body, None).await.0, 201);
    }
    let (backlog, lag, _, _) = until("rising during the outage", |backlog, lag| backlog >= 10.0 && lag >= 10.0).await;
    for _ in 0..15 {
        assert_eq!(t.command("deposit", body, None).await.0, 201);
    }
    let (higher_backlog, higher_lag, api, query) =
        until("still rising", |backlog, lag| backlog >= 25.0 && lag >= 25.0).await;
    assert!(higher_backlog > backlog && higher_lag > lag, "both climb while NATS is down");
    assert!(
        metric(&api, "ledger_relay_publish_failures_total").unwrap_or(0.0) >= 1.0,
        "failed publishes counted: {api}"
    );
    assert!(metric(&query, "ledger_read_model_lag_seconds").is_some(), "{query}");
    assert!(api.contains(r#"route="/api/v1/commands/{kind}",status="201""#), "requests by route and status: {api}");
    assert!(api.contains("db_pool_connections_max"), "{api}");
    nats.restart();
    until("back to 0 after NATS restarts", |backlog, lag| backlog == 0.0 && lag == 0.0).await;
    t.caught_up("M-1", 41).await;
    t.cleanup().await;
}

/// Goal: spec 000 scenario 3: a read model corrupted by hand is repaired by `rebuild`.
/// Method: several accounts with deposits, withdrawals and transfers; an UPDATE sets a wrong
/// balance and a DELETE loses an account; rebuild; every balance equals the event store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuild_repairs_a_corrupted_read_model() {
    let t = TestLedger::start().await;
    let accounts = ["R-1", "R-2", "R-3"];
    for id in accounts {
        t.create_account(id, "100.00", "USD").await;
    }
    t.command("deposit", r#"{"account_id":"R-1","amount":"5.55"}"#, None).await;
    t.command("withdraw", r#"{"account_id":"R-2","amount":"40"}"#, None).await;
    let (status, _, _) =
        t.command("transfer", r#"{"from_account_id":"R-3","to_account_id":"R-1","amount":"30.00"}"#, None).await;
    assert_eq!(status, 201);
    t.caught_up("R-1", 3).await;
    t.caught_up("R-2", 2).await;
    t.caught_up("R-3", 2).await;

    sqlx::query("UPDATE account_balances SET balance = 9999999 WHERE account_id = 'R-1'")
        .execute(t.ledger.read.pool())
        .await
        .unwrap();
    sqlx::query("DELETE FROM account_balances WHERE account_id = 'R-2'").execute(t.ledger.read.pool()).await.unwrap();
    assert_eq!(t.balance("R-1", None).await.1["balance"], "9999999.00");

    let replayed = t.ledger.rebuild().await.unwrap();
    assert_eq!(replayed, 7);
    for id in accounts {
        let (truth, version) = t.store_balance(id).await;
        let (status, view) = t.balance(id, None).await;
        assert_eq!(status, 200);
        assert_eq!(dec(view["balance"].as_str().unwrap()), truth, "{id}");
        assert_eq!(view["version"], version);
    }
    assert_eq!(t.balance("R-1", None).await.1["balance"], "135.55");
    t.cleanup().await;
}

/// Goal: a retried command with the same Idempotency-Key gets the same answer, applied once;
/// the same key with another body is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_key_retry_answers_the_first_outcome() {
    let t = TestLedger::start().await;
    t.create_account("I-1", "0", "USD").await;
    let body = r#"{"account_id":"I-1","amount":"25.00"}"#;
    let (s1, first, replayed1) = t.command("deposit", body, Some("key-I-1")).await;
    let (s2, second, replayed2) = t.command("deposit", body, Some("key-I-1")).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, second, "same event id, position and balance");
    assert_eq!((replayed1, replayed2), (false, true));
    // Concurrent retries of one key: still applied once.
    let key_body = r#"{"account_id":"I-1","amount":"1.00"}"#;
    let answers = join_all((0..10).map(|_| t.command("deposit", key_body, Some("key-I-2")))).await;
    assert!(answers.iter().all(|(s, b, _)| *s == 201 && *b == answers[0].1));
    let events_before = t.event_count().await;
    let (s3, refused, _) = t.command("deposit", r#"{"account_id":"I-1","amount":"99.00"}"#, Some("key-I-1")).await;
    assert_eq!(s3, 422);
    assert_eq!(refused["error"], "idempotency_key_reused");
    assert_eq!(t.event_count().await, events_before);
    assert_eq!(t.store_balance("I-1").await, (dec("26.00"), 3));
    t.cleanup().await;
}

/// Goal: bad input gets a 4xx with a JSON body naming the problem, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_and_writes_nothing() {
    let t = TestLedger::start().await;
    t.create_account("B-1", "50.00", "USD").await;
    t.create_account("B-2", "50.00", "EUR").await;
    let before = t.event_count().await;
    let cases: &[(&str, &str, u16, &str, Option<&str>)] = &[
        ("deposit", r#"{"account_id":"B-1","amount":0}"#, 422, "invalid_amount", Some("amount")),
        ("deposit", r#"{"account_id":"B-1","amount":-5.00}"#, 422, "invalid_amount", Some("amount")),
        ("withdraw", r#"{"account_id":"B-1","amount":1.001}"#, 422, "invalid_amount", Some("amount")),
        ("deposit", r#"{"account_id":"B-1","amount":"10000000000000.01"}"#, 422, "invalid_amount", Some("amount")),
        (
            "create-account",
            r#"{"account_id":"B-3","owner_name":"x","currency":"XYZ"}"#,
            422,
            "invalid_field",
            Some("currency"),
        ),
        (
            "deposit",
            r#"{"account_id":"B-1","amount":"1.00","currency":"EUR"}"#,
            422,
            "currency_mismatch",
            Some("currency"),
        ),
        ("deposit", r#"{"account_id":"B-1","amount":"#, 400, "malformed_json", None),
        ("deposit", r#"{"amount":"1.00"}"#, 422, "missing_field", Some("account_id")),
        ("withdraw", r#"{"account_id":"B-1"}"#, 422, "missing_field", Some("amount")),
        ("deposit", r#"{"account_id":"NOPE","amount":"1.00"}"#, 404, "account_not_found", None),
        (
            "transfer",
            r#"{"from_account_id":"B-1","to_account_id":"B-2","amount":"1.00"}"#,
            422,
            "currency_mismatch",
            Some("currency"),
        ),
        (
            "transfer",
            r#"{"from_account_id":"B-1","to_account_id":"B-1","amount":"1.00"}"#,
            422,
            "same_account",
            Some("to_account_id"),
        ),
        (
            "create-account",
            r#"{"account_id":"B-1","owner_name":"again","currency":"USD"}"#,
            409,
            "account_exists",
            None,
        ),
        (
            "create-account",
            r#"{"account_id":"has space","owner_name":"x","currency":"USD"}"#,
            422,
            "invalid_field",
            Some("account_id"),
        ),
        ("deposit", r#"{"account_id":"B-1","amount":true}"#, 422, "invalid_field", Some("amount")),
        ("teleport", r#"{}"#, 404, "unknown_command", None),
    ];
    for (kind, body, status, error, field) in cases {
        let (got, answer, _) = t.command(kind, body, Some(&format!("bad-{kind}-{body}").replace([' ', '"'], ""))).await;
        assert_eq!(got, *status, "{kind} {body}: {answer}");
        assert_eq!(answer["error"], *error, "{kind} {body}: {answer}");
        if let Some(field) = field {
            assert_eq!(answer["field"], *field, "{kind} {body}: {answer}");
        }
        assert!(answer["message"].is_string());
    }
    let huge = format!(r#"{{"account_id":"B-1","amount":"1","pad":"{}"}}"#, "x".repeat(100_000));
    assert_eq!(t.command("deposit", &huge, None).await.0, 413);
    let (status, answer, _) = t.command("deposit", r#"{"account_id":"B-1","amount":"1"}"#, Some("bad key")).await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("Idempotency-Key")));
    let view = t.caught_up("B-1", 1).await;
    assert_eq!((view["balance"].as_str(), view["version"].as_u64()), (Some("50.00"), Some(1)));
    let response =
        t.http.get(format!("http://{}/api/v1/accounts/B-1/balance?min_position=x", t.query)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(t.event_count().await, before, "nothing written");
    t.cleanup().await;
}

/// Goal: spec 000 scenario 6 on the real store: a v1 `MoneyDeposited` (no currency) written by
/// an old writer is upcast by the command side and by the projection alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v1_events_in_the_store_are_upcast_everywhere() {
    let t = TestLedger::start().await;
    t.create_account("V-1", "100.00", "USD").await;
    let legacy = EncodedEvent {
        event_type: "MoneyDeposited".into(),
        event_version: 1,
        data: serde_json::from_str(r#"{"amount": 500.00}"#).unwrap(),
    };
    t.ledger.store.insert_legacy("V-1", 2, &legacy, uuid::Uuid::from_u128(0x5eed_0001)).await.unwrap();
    let (status, receipt, _) = t.command("withdraw", r#"{"account_id":"V-1","amount":"550.00"}"#, None).await;
    assert_eq!(status, 201, "{receipt}");
    assert_eq!(receipt["balance"], "50.00");
    assert_eq!(receipt["position"], 3);
    let view = t.caught_up("V-1", 3).await;
    assert_eq!(
        view,
        json!({
            "account_id": "V-1", "owner_name": "Owner V-1", "balance": "50.00", "currency": "USD",
            "version": 3, "position": 3, "global_position": view["global_position"].clone(),
        })
    );
    t.cleanup().await;
}

/// Goal: read-your-writes: a read with the position a command returned sees that command.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_your_writes_with_min_position() {
    let t = TestLedger::start().await;
    t.create_account("Y-1", "1.00", "JPY").await;
    for i in 0..20 {
        let (status, receipt, _) = t.command("deposit", r#"{"account_id":"Y-1","amount":3}"#, None).await;
        assert_eq!(status, 201);
        let position = receipt["position"].as_u64().unwrap();
        assert_eq!(position, i + 2);
        let (status, view) = t.balance("Y-1", Some(position)).await;
        assert_eq!(status, 200, "{view}");
        assert!(view["version"].as_u64().unwrap() >= position);
        assert_eq!(view["balance"], receipt["balance"]);
    }
    t.cleanup().await;
}

/// Goal: the real adapters keep the ports' contracts, with the very bodies the in-memory and
/// simulated adapters are held to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_adapters_keep_the_contracts() {
    use services::adapters::pg::{PgEventStore, PgReadModel, lazy_pool};
    use services::ledger::contract;
    let config = test_config("nats://127.0.0.1:4222");
    services::app::prepare(&config).await.unwrap();
    let store = PgEventStore::new(lazy_pool(&config.ledger_database_url, 4).unwrap());
    let read = PgReadModel::new(lazy_pool(&config.read_database_url, 4).unwrap());
    contract::event_store(&store, "pg", 1 << 64).await.unwrap();
    contract::read_model(&read, &store, "pg", 2 << 64).await.unwrap();
    store.pool().close().await;
    read.pool().close().await;
    support::drop_database(&config.ledger_database_url).await;
    support::drop_database(&config.read_database_url).await;
}

/// Goal: with LEDGER_API_TOKEN set, commands need the bearer token (401 without, with a JSON
/// body naming the header); health and reads stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_commands() {
    let mut config = test_config("nats://127.0.0.1:4222");
    config.api_token = Some("s3cret".into());
    let t = TestLedger::start_with(config).await;
    let body = r#"{"account_id":"T-1","owner_name":"T","currency":"USD"}"#;
    let (status, answer, _) = t.command("create-account", body, None).await;
    assert_eq!((status, answer["field"].as_str()), (401, Some("Authorization")), "{answer}");
    let url = format!("http://{}/api/v1/commands/create-account", t.api);
    let wrong = t.http.post(&url).header("Authorization", "Bearer nope").body(body).send().await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = t.http.post(&url).header("Authorization", "Bearer s3cret").body(body).send().await.unwrap();
    assert_eq!(right.status().as_u16(), 201);
    assert_eq!(t.health(false).await.0, 200, "health needs no token");
    assert_eq!(t.event_count().await, 1, "only the authorised command was applied");
    t.cleanup().await;
}
