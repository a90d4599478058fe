use std::collections::BTreeMap;

use jiff::Timestamp;

use super::decide::{Observed, ScheduledRun, decide, run_name};
use super::ticks::{Ticks, TicksError};
use crate::api::{
    ConcurrencyPolicy, ConditionStatus, RunPhase, ScheduleSpec, ScheduleStatus, WorkflowRef,
};

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn next(cron: &str, zone: Option<&str>, after: &str) -> String {
    Ticks::new(cron, zone)
        .unwrap()
        .next_after(at(after))
        .unwrap()
        .to_string()
}

fn ticks_after(cron: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
    let ticks = Ticks::new(cron, Some(zone)).unwrap();
    let mut t = at(after);
    (0..n)
        .map(|_| {
            t = ticks.next_after(t).unwrap();
            t.to_string()
        })
        .collect()
}

#[test]
fn five_fields_and_shortcuts_in_utc() {
    assert_eq!(
        next("0 3 * * *", None, "2026-12-01T05:00:00Z"),
        "2026-12-02T03:00:00Z"
    );
    assert_eq!(
        next("0 3 * * *", None, "2026-12-01T02:59:59Z"),
        "2026-12-01T03:00:00Z"
    );
    // Strictly after: a tick at `after` itself is not next.
    assert_eq!(
        next("0 3 * * *", None, "2026-12-01T03:00:00Z"),
        "2026-12-02T03:00:00Z"
    );
    assert_eq!(
        next("@hourly", None, "2026-12-01T05:10:00Z"),
        "2026-12-01T06:00:00Z"
    );
    assert_eq!(
        next("@daily", None, "2026-12-01T05:10:00Z"),
        "2026-12-02T00:00:00Z"
    );
    assert_eq!(
        next("@weekly", None, "2026-12-01T05:10:00Z"),
        "2026-12-06T00:00:00Z"
    );
    assert_eq!(
        next("@monthly", None, "2026-12-01T05:10:00Z"),
        "2027-01-01T00:00:00Z"
    );
    assert_eq!(
        next("@yearly", None, "2026-12-01T05:10:00Z"),
        "2027-01-01T00:00:00Z"
    );
    assert_eq!(
        next("*/15 * * * *", None, "2026-12-01T05:10:00Z"),
        "2026-12-01T05:15:00Z"
    );
    // Day of month and day of week both restricted: either matches (standard cron).
    assert_eq!(
        next("0 0 13 * FRI", None, "2026-12-01T00:00:00Z"),
        "2026-12-04T00:00:00Z"
    );
    assert_eq!(
        next("0 0 * * 7", None, "2026-12-01T00:00:00Z"),
        "2026-12-06T00:00:00Z"
    );
}

#[test]
fn bad_cron_and_zones_are_named() {
    let problems = |cron: &str, zone: Option<&str>| -> Vec<String> {
        Ticks::new(cron, zone)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    for cron in [
        "61 * * * *",
        "* * * *",
        "0 * * * * *",
        "",
        "hello",
        "@fortnightly",
        "* 24 * * *",
    ] {
        let found = problems(cron, None);
        assert_eq!(found.len(), 1, "{cron}: {found:?}");
        assert!(found[0].starts_with("cron \""), "{found:?}");
        assert!(
            found[0].contains("is not a valid cron expression"),
            "{found:?}"
        );
    }
    assert_eq!(
        Ticks::new("0 0 30 2 *", None).unwrap_err(),
        vec![TicksError::NeverFires {
            cron: "\"0 0 30 2 *\"".into()
        }]
    );
    let found = problems("0 3 * * *", Some("Mars/Olympus_Mons"));
    assert_eq!(
        found,
        vec!["timeZone \"Mars/Olympus_Mons\" is not a known IANA time zone"]
    );
    // Both problems at once.
    assert_eq!(problems("nope", Some("Nowhere/Land")).len(), 2);
    // Huge input is cut in the message.
    let long = "1".repeat(100_000);
    let found = problems(&long, Some(&long));
    assert!(found.iter().all(|p| p.len() < 300), "{found:?}");
}

#[test]
fn a_skipped_wall_time_fires_once_when_the_clock_jumps() {
    // Berlin springs forward on 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    assert_eq!(
        ticks_after("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    );
    // Four ticks in the missing hour fire once, at the jump.
    assert_eq!(
        ticks_after("*/15 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"]
    );
    // A tick at the jump itself and one in the gap are the same instant: once.
    assert_eq!(
        ticks_after("30 2,3 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 3),
        [
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-30T00:30:00Z"
        ]
    );
    // New York, 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC).
    assert_eq!(
        ticks_after("0 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
        ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"]
    );
}

#[test]
fn a_repeated_wall_time_fires_once_at_its_first_occurrence() {
    // Berlin falls back on 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC).
    assert_eq!(
        ticks_after("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    assert_eq!(
        ticks_after("*/30 * * * *", "Europe/Berlin", "2026-10-24T23:45:00Z", 4),
        [
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:30:00Z",
            // 02:00 and 02:30 CET repeat 02:00 and 02:30 CEST: not again.
            "2026-10-25T02:00:00Z",
            "2026-10-25T02:30:00Z",
        ]
    );
    let ticks = Ticks::new("*/30 * * * *", Some("Europe/Berlin")).unwrap();
    // Seen from the second pass through 02:xx, the latest tick is the first pass's last.
    assert_eq!(
        ticks
            .latest_at_or_before(at("2026-10-25T01:45:00Z"))
            .unwrap()
            .to_string(),
        "2026-10-25T00:30:00Z"
    );
}

#[test]
fn latest_tick_at_or_before_now() {
    let ticks = Ticks::new("0 3 * * *", None).unwrap();
    assert_eq!(
        ticks.latest_at_or_before(at("2026-12-01T03:00:00Z")),
        Some(at("2026-12-01T03:00:00Z"))
    );
    assert_eq!(
        ticks.latest_at_or_before(at("2026-12-01T02:59:59Z")),
        Some(at("2026-11-30T03:00:00Z"))
    );
    let minutely = Ticks::new("* * * * *", None).unwrap();
    assert_eq!(
        minutely.latest_at_or_before(at("2026-12-01T03:00:59Z")),
        Some(at("2026-12-01T03:00:00Z"))
    );
    let spring = Ticks::new("30 2 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(
        spring.latest_at_or_before(at("2026-03-29T01:10:00Z")),
        Some(at("2026-03-29T01:00:00Z"))
    );
}

fn spec(cron: &str) -> ScheduleSpec {
    ScheduleSpec {
        workflow_ref: WorkflowRef { name: "etl".into() },
        params: BTreeMap::from([
            ("date".to_string(), "$(ORK_SCHEDULED_DATE)".to_string()),
            ("at".to_string(), "tick $(ORK_SCHEDULED_TIME)".to_string()),
            ("plain".to_string(), "x".to_string()),
        ]),
        cron: cron.into(),
        ..ScheduleSpec::default()
    }
}

fn run(name: &str, scheduled: &str, phase: Option<RunPhase>) -> ScheduledRun {
    ScheduledRun {
        name: name.into(),
        scheduled: Some(at(scheduled)),
        created: Some(at(scheduled)),
        phase,
        finished_at: phase.filter(|p| p.is_final()).map(|_| at(scheduled)),
        cancelling: false,
    }
}

fn observe<'a>(
    spec: &'a ScheduleSpec,
    status: &'a ScheduleStatus,
    runs: Vec<ScheduledRun>,
    now: &str,
) -> Observed<'a> {
    Observed {
        name: "nightly",
        spec,
        generation: Some(1),
        created: at("2026-11-01T00:00:00Z"),
        status,
        runs,
        now: at(now),
    }
}

#[test]
fn a_due_tick_makes_one_run_named_after_it_with_params_expanded() {
    let mut s = spec("0 3 * * *");
    s.time_zone = Some("Asia/Tokyo".into());
    let status = ScheduleStatus {
        last_schedule_time: Some(at("2026-11-29T18:00:00Z")),
        ..ScheduleStatus::default()
    };
    // 03:00 in Tokyo on 1 December is 18:00 UTC on 30 November.
    let plan = decide(&observe(&s, &status, vec![], "2026-11-30T18:00:05Z"));
    let new = plan.create.expect("a Run");
    assert_eq!(new.name, run_name("nightly", at("2026-11-30T18:00:00Z")));
    assert_eq!(
        new.name,
        format!("nightly-{}", at("2026-11-30T18:00:00Z").as_second() / 60)
    );
    assert_eq!(new.params["date"], "2026-12-01");
    assert_eq!(new.params["at"], "tick 2026-11-30T18:00:00Z");
    assert_eq!(new.params["plain"], "x");
    assert_eq!(
        plan.status.last_schedule_time,
        Some(at("2026-11-30T18:00:00Z"))
    );
    assert_eq!(
        plan.status.next_schedule_time,
        Some(at("2026-12-01T18:00:00Z"))
    );
    assert_eq!(plan.wake_at, plan.status.next_schedule_time);
    assert_eq!(plan.status.active.len(), 1);
    assert_eq!(plan.status.conditions[0].status, ConditionStatus::True);
    assert_eq!(
        plan.notes.iter().map(|n| n.reason).collect::<Vec<_>>(),
        ["RunCreated"]
    );

    // Decided again with the status written: nothing more.
    let again = decide(&observe(
        &s,
        &plan.status,
        vec![run(&new.name, "2026-11-30T18:00:00Z", None)],
        "2026-11-30T18:00:30Z",
    ));
    assert_eq!(again.create, None);
    assert!(again.notes.is_empty());
}

#[test]
fn nothing_before_the_schedule_existed() {
    let s = spec("* * * * *");
    let status = ScheduleStatus::default();
    let mut o = observe(&s, &status, vec![], "2026-12-01T10:00:40Z");
    o.created = at("2026-12-01T10:00:30Z");
    let plan = decide(&o);
    assert_eq!(plan.create, None);
    assert_eq!(
        plan.status.next_schedule_time,
        Some(at("2026-12-01T10:01:00Z"))
    );
    o.now = at("2026-12-01T10:01:00Z");
    assert!(decide(&o).create.is_some());
}

#[test]
fn a_restart_after_the_run_was_made_but_before_the_status_makes_no_second_run() {
    let s = spec("* * * * *");
    let status = ScheduleStatus {
        last_schedule_time: Some(at("2026-12-01T10:00:00Z")),
        ..ScheduleStatus::default()
    };
    let made = run_name("nightly", at("2026-12-01T10:01:00Z"));
    let plan = decide(&observe(
        &s,
        &status,
        vec![run(&made, "2026-12-01T10:01:00Z", Some(RunPhase::Running))],
        "2026-12-01T10:01:07Z",
    ));
    assert_eq!(plan.create, None);
    assert_eq!(
        plan.status.last_schedule_time,
        Some(at("2026-12-01T10:01:00Z"))
    );
    assert_eq!(plan.status.active.len(), 1);
    assert!(plan.notes.is_empty());
}

#[test]
fn after_downtime_only_the_latest_missed_tick_runs_within_the_deadline() {
    let mut s = spec("* * * * *");
    let status = ScheduleStatus {
        last_schedule_time: Some(at("2026-12-01T10:00:00Z")),
        ..ScheduleStatus::default()
    };
    let plan = decide(&observe(&s, &status, vec![], "2026-12-01T10:30:20Z"));
    assert_eq!(
        plan.create.map(|r| r.scheduled),
        Some(at("2026-12-01T10:30:00Z"))
    );

    s.starting_deadline_seconds = Some(10);
    let plan = decide(&observe(&s, &status, vec![], "2026-12-01T10:30:20Z"));
    assert_eq!(plan.create, None);
    assert_eq!(
        plan.status.last_skipped_time,
        Some(at("2026-12-01T10:30:00Z"))
    );
    assert_eq!(
        plan.status.last_schedule_time,
        Some(at("2026-12-01T10:00:00Z"))
    );
    assert!(plan.notes[0].warning);
    assert!(
        plan.notes[0].message.contains("startingDeadlineSeconds"),
        "{:?}",
        plan.notes
    );
    // Recorded as skipped: not reported again.
    let again = decide(&observe(&s, &plan.status, vec![], "2026-12-01T10:30:40Z"));
    assert_eq!(again.create, None);
    assert!(again.notes.is_empty());
    s.starting_deadline_seconds = Some(30);
    assert!(
        decide(&observe(&s, &status, vec![], "2026-12-01T10:30:20Z"))
            .create
            .is_some()
    );
}

#[test]
fn concurrency_policies() {
    let status = ScheduleStatus {
        last_schedule_time: Some(at("2026-12-01T10:00:00Z")),
        ..ScheduleStatus::default()
    };
    let running = || {
        vec![run(
            "nightly-1",
            "2026-12-01T10:00:00Z",
            Some(RunPhase::Running),
        )]
    };
    let now = "2026-12-01T10:01:01Z";

    let allow = spec("* * * * *");
    let plan = decide(&observe(&allow, &status, running(), now));
    assert!(plan.create.is_some());
    assert!(plan.cancel.is_empty());
    assert_eq!(plan.status.active.len(), 2);

    let mut forbid = spec("* * * * *");
    forbid.concurrency_policy = Some(ConcurrencyPolicy::Forbid);
    let plan = decide(&observe(&forbid, &status, running(), now));
    assert_eq!(plan.create, None);
    assert_eq!(
        plan.status.last_skipped_time,
        Some(at("2026-12-01T10:01:00Z"))
    );
    assert_eq!(plan.notes[0].reason, "TickSkipped");
    assert!(
        plan.notes[0].message.contains("\"nightly-1\""),
        "{:?}",
        plan.notes
    );
    // The running Run finishes 10 s later: the skipped tick is not run late.
    let done = vec![run(
        "nightly-1",
        "2026-12-01T10:00:00Z",
        Some(RunPhase::Succeeded),
    )];
    let later = decide(&observe(
        &forbid,
        &plan.status,
        done.clone(),
        "2026-12-01T10:01:11Z",
    ));
    assert_eq!(later.create, None);
    // The next tick runs.
    assert!(
        decide(&observe(
            &forbid,
            &later.status,
            done,
            "2026-12-01T10:02:00Z"
        ))
        .create
        .is_some()
    );

    let mut replace = spec("* * * * *");
    replace.concurrency_policy = Some(ConcurrencyPolicy::Replace);
    let plan = decide(&observe(&replace, &status, running(), now));
    assert!(plan.create.is_some());
    assert_eq!(plan.cancel, ["nightly-1"]);
    assert_eq!(plan.status.active.len(), 1);
    // One already being cancelled is not cancelled again.
    let mut cancelling = running();
    cancelling[0].cancelling = true;
    assert!(
        decide(&observe(&replace, &status, cancelling, now))
            .cancel
            .is_empty()
    );
}

#[test]
fn suspended_schedules_make_nothing_and_resume_with_the_latest_missed_tick() {
    let mut s = spec("* * * * *");
    s.suspend = true;
    let status = ScheduleStatus {
        last_schedule_time: Some(at("2026-12-01T10:00:00Z")),
        ..ScheduleStatus::default()
    };
    let plan = decide(&observe(&s, &status, vec![], "2026-12-01T10:05:30Z"));
    assert_eq!(plan.create, None);
    assert_eq!(plan.status.next_schedule_time, None);
    assert_eq!(plan.wake_at, None);
    s.suspend = false;
    let plan = decide(&observe(&s, &status, vec![], "2026-12-01T10:05:30Z"));
    assert_eq!(
        plan.create.map(|r| r.scheduled),
        Some(at("2026-12-01T10:05:00Z"))
    );
}

#[test]
fn history_limits_delete_the_oldest_finished_runs_only() {
    let mut s = spec("0 0 1 1 *");
    s.successful_runs_history_limit = Some(2);
    let status = ScheduleStatus::default();
    let runs = vec![
        run("s1", "2026-11-01T01:00:00Z", Some(RunPhase::Succeeded)),
        run("s2", "2026-11-01T02:00:00Z", Some(RunPhase::Succeeded)),
        run("s3", "2026-11-01T03:00:00Z", Some(RunPhase::Succeeded)),
        run("s4", "2026-11-01T04:00:00Z", Some(RunPhase::Succeeded)),
        run("f1", "2026-11-01T01:30:00Z", Some(RunPhase::Failed)),
        run("c1", "2026-11-01T02:30:00Z", Some(RunPhase::Cancelled)),
        run("r1", "2026-11-01T00:30:00Z", Some(RunPhase::Running)),
        run("p1", "2026-11-01T00:20:00Z", None),
    ];
    let plan = decide(&observe(&s, &status, runs.clone(), "2026-11-02T00:00:00Z"));
    assert_eq!(plan.delete, ["s1", "s2", "f1"]);
    assert_eq!(
        plan.status
            .active
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["p1", "r1"]
    );
    assert_eq!(
        plan.status.last_successful_time,
        Some(at("2026-11-01T04:00:00Z"))
    );
    s.successful_runs_history_limit = Some(0);
    s.failed_runs_history_limit = Some(5);
    assert_eq!(
        decide(&observe(&s, &status, runs, "2026-11-02T00:00:00Z")).delete,
        ["s1", "s2", "s3", "s4"]
    );
}

#[test]
fn an_invalid_schedule_says_why_once_and_makes_nothing() {
    let mut s = spec("0 25 * * *");
    s.time_zone = Some("Nowhere/Land".into());
    let status = ScheduleStatus::default();
    let plan = decide(&observe(&s, &status, vec![], "2026-12-01T10:00:00Z"));
    assert_eq!(plan.create, None);
    assert_eq!(plan.wake_at, None);
    let valid = &plan.status.conditions[0];
    assert_eq!(valid.status, ConditionStatus::False);
    let message = valid.message.as_deref().unwrap();
    assert!(message.contains("cron \"0 25 * * *\""), "{message}");
    assert!(message.contains("timeZone \"Nowhere/Land\""), "{message}");
    assert_eq!(plan.notes.len(), 1);
    assert!(plan.notes[0].warning);
    let again = decide(&observe(&s, &plan.status, vec![], "2026-12-01T10:01:00Z"));
    assert!(again.notes.is_empty());
    assert_eq!(
        again.status.conditions[0].last_transition_time,
        valid.last_transition_time
    );

    let s = spec("0 3 * * *");
    let mut o = observe(&s, &status, vec![], "2026-12-01T10:00:00Z");
    let long = "n".repeat(53);
    o.name = &long;
    let plan = decide(&o);
    assert_eq!(plan.status.conditions[0].status, ConditionStatus::False);
    assert!(
        plan.status.conditions[0]
            .message
            .as_deref()
            .unwrap()
            .contains("metadata.name is 53 characters long, at most 52")
    );
}

mod properties {
    use jiff::{SignedDuration, Timestamp};
    use proptest::prelude::*;

    use super::super::ticks::Ticks;

    const CRONS: &[&str] = &[
        "* * * * *",
        "*/7 * * * *",
        "30 2 * * *",
        "0 1-3 * * *",
        "15,45 * * * 1-5",
        "0 0 29 2 *",
        "@daily",
        "0 0 13 * 5",
    ];
    const ZONES: &[&str] = &[
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "America/Santiago",
    ];

    proptest! {
        /// Ticks only move forward, the latest tick at or before a tick is that tick, and
        /// nothing lies between `latest_at_or_before(t)` and `t` that `next_after` would skip.
        #[test]
        fn ticks_are_increasing_and_consistent(
            cron in prop::sample::select(CRONS),
            zone in prop::sample::select(ZONES),
            start in 1_700_000_000i64..1_900_000_000i64,
        ) {
            let ticks = Ticks::new(cron, Some(zone)).unwrap();
            let mut at = Timestamp::from_second(start).unwrap();
            for _ in 0..20 {
                let next = ticks.next_after(at).unwrap();
                prop_assert!(next > at);
                prop_assert_eq!(ticks.latest_at_or_before(next), Some(next));
                let just_before = next - SignedDuration::from_secs(1);
                if let Some(latest) = ticks.latest_at_or_before(just_before) {
                    prop_assert!(latest <= just_before);
                    prop_assert_eq!(ticks.next_after(latest), Some(next));
                }
                at = next;
            }
        }
    }
}
