//! Every scenario of the testbed, ledger, orders and the simulator's self-checks, under one name
//! space: what `list`, `sweep` and `repro` accept, and which scenario's sweep exposes each
//! planted bug.

use services::bugs::Bug;

use crate::ledger::scenario::LedgerScenario;
use crate::orders::scenario::OrdersScenario;
use crate::selfcheck::SelfCheck;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Ledger(LedgerScenario),
    Orders(OrdersScenario),
    /// One simulated dependency alone, held to its contract.
    SelfCheck(SelfCheck),
}

impl Scenario {
    pub fn all() -> Vec<Scenario> {
        let ledger = LedgerScenario::ALL.into_iter().map(Scenario::Ledger);
        ledger
            .chain(OrdersScenario::ALL.into_iter().map(Scenario::Orders))
            .chain(SelfCheck::ALL.into_iter().map(Scenario::SelfCheck))
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Ledger(s) => s.name(),
            Scenario::Orders(s) => s.name(),
            Scenario::SelfCheck(s) => s.name(),
        }
    }

    pub fn about(self) -> &'static str {
        match self {
            Scenario::Ledger(s) => s.about(),
            Scenario::Orders(s) => s.about(),
            Scenario::SelfCheck(s) => s.about(),
        }
    }

    pub fn default_seeds(self) -> u64 {
        match self {
            Scenario::Ledger(s) => s.default_seeds(),
            Scenario::Orders(s) => s.default_seeds(),
            Scenario::SelfCheck(s) => s.default_seeds(),
        }
    }

    /// Seeds per scenario of a long sweep (`testbed soak`): every order scenario and
    /// `ledger-chaos` 20,000, every other ledger scenario and every self-check 5,000.
    pub fn soak_seeds(self) -> u64 {
        match self {
            Scenario::Ledger(LedgerScenario::Chaos) | Scenario::Orders(_) => 20_000,
            Scenario::Ledger(_) | Scenario::SelfCheck(_) => 5_000,
        }
    }

    /// Coverage marks a default-size sweep of this scenario must go through.
    pub fn required_marks(self) -> &'static [&'static str] {
        use LedgerScenario as L;
        use OrdersScenario as O;
        match self {
            Scenario::Ledger(L::Chaos) => &[
                "conflict-retried",
                "serialization-retried",
                "ambiguous-commit-resolved",
                "idempotent-replay",
                "relay-publish-failed",
                "redelivery",
                "gap-redelivered",
                "duplicate-delivery-deduped",
            ],
            Scenario::Ledger(L::ProcessorCrash) => &["redelivery", "duplicate-delivery-deduped"],
            Scenario::Ledger(L::NatsDown) => &["relay-publish-failed"],
            Scenario::Ledger(L::ConcurrentWithdrawals) => &["conflict-retried"],
            Scenario::Ledger(L::ApiKilledMidRequest) => &["idempotent-replay"],
            Scenario::Orders(O::FlashSale) => &[
                "compensation-after-failed-produce",
                "persisted-before-cancel",
                "cancellation-finished-by-retry",
                "stale-reservation-cancelled",
                "cancelled-order-skipped",
                "rate-limited",
                "waiting-room-redirect",
            ],
            Scenario::Orders(O::WorkerCrash) => &["duplicate-order-deduped"],
            Scenario::Orders(O::KafkaDown) => &["compensation-after-failed-produce"],
            Scenario::Orders(O::RedisRestart) => &["sold-out-after-loss-checked"],
            _ => &[],
        }
    }

    /// Outcomes (`verdict::OUTCOMES`) a default-size sweep of this scenario must see at least
    /// once: the sometimes-assertions of ADR 10. `ledger-chaos` must show both ends of an
    /// ambiguous write, `flash-sale` an order accepted on a retry after a compensated produce.
    pub fn required_outcomes(self) -> &'static [&'static str] {
        use LedgerScenario as L;
        use OrdersScenario as O;
        match self {
            Scenario::Ledger(L::Chaos) => &[
                "transfer-ok",
                "withdraw-refused-for-funds",
                "ambiguous-write-applied",
                "ambiguous-write-not-applied",
                "read-your-write",
                "read-model-behind",
            ],
            Scenario::Ledger(L::ConcurrentWithdrawals | L::DoubleSpend) => &["withdraw-refused-for-funds"],
            Scenario::Ledger(L::ApiKilledMidRequest) => &["transfer-ok", "read-your-write"],
            Scenario::Ledger(L::ProcessorCrash | L::NatsDown) => &["read-model-behind"],
            Scenario::Orders(O::FlashSale) => &[
                "order-accepted",
                "order-sold-out",
                "order-refused-nothing-reserved",
                "order-accepted-after-refusal",
                "ambiguous-order-persisted",
                "ambiguous-order-not-persisted",
                "late-retry-settled",
            ],
            Scenario::Orders(O::KafkaDown) => &["order-accepted", "order-refused-nothing-reserved"],
            // Half a second per Redis call: every order times out (the scenario's expectation).
            Scenario::Orders(O::RedisLatency(500)) => &[],
            Scenario::Orders(_) => &["order-accepted"],
            Scenario::SelfCheck(SelfCheck::Kafka) => &["kafka-resumed-from-commit"],
            Scenario::SelfCheck(SelfCheck::JetStream) => &["jetstream-delivered-after-restart"],
            _ => &[],
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Self::all().into_iter().find(|s| s.name() == name)
    }

    /// The scenario whose sweep exposes a planted bug.
    pub fn exposing(bug: Bug) -> Scenario {
        if bug == Bug::CommitWithoutQuorum {
            return Scenario::SelfCheck(SelfCheck::Crdb);
        }
        match OrdersScenario::exposing(bug) {
            Some(s) => Scenario::Orders(s),
            None => Scenario::Ledger(LedgerScenario::exposing(bug)),
        }
    }
}
