//! When a schedule ticks: a cron expression read in an IANA time zone.
//!
//! The cron fields match wall-clock (civil) times; jiff maps each to an instant in the zone.
//! Daylight-saving transitions follow the contract: a wall time that does not exist (clocks
//! spring forward) fires once, at the instant the clock jumps; a wall time that occurs twice
//! (clocks fall back) fires once, at its first occurrence.

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::civil::DateTime as WallTime;
use jiff::tz::{AmbiguousOffset, TimeZone};

use crate::api::schedule::{MAX_CRON_LEN, MAX_TIME_ZONE_LEN};
use crate::text::quoted;

/// Upper bound on wall times looked at for one answer. A fall-back hour repeats at most 60
/// minute ticks, so real schedules need a handful; the bound keeps a pathological one finite.
const MAX_STEPS: usize = 2_000;

/// The ticks of a schedule.
#[derive(Debug, Clone)]
pub struct Ticks {
    cron: Cron,
    zone: TimeZone,
}

/// Why a schedule's timing cannot be used; each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicksError {
    #[error("cron {cron} is not a valid cron expression: {reason}")]
    Cron { cron: String, reason: String },
    #[error("cron {cron} never fires")]
    NeverFires { cron: String },
    #[error("timeZone {zone} is not a known IANA time zone")]
    Zone { zone: String },
}

impl Ticks {
    /// Parses `cron` (five fields or an `@` shortcut) read in `zone` (default UTC). Every
    /// problem is reported, not only the first.
    pub fn new(cron: &str, zone: Option<&str>) -> Result<Self, Vec<TicksError>> {
        let mut problems = Vec::new();
        let zone = match zone {
            None => Some(TimeZone::UTC),
            Some(name) => match (name.len() <= MAX_TIME_ZONE_LEN)
                .then(|| TimeZone::get(name).ok())
                .flatten()
            {
                Some(zone) => Some(zone),
                None => {
                    problems.push(TicksError::Zone { zone: quoted(name) });
                    None
                }
            },
        };
        let shown = quoted(cron);
        let parsed = if cron.len() > MAX_CRON_LEN {
            Err(TicksError::Cron {
                cron: shown.clone(),
                reason: format!("longer than {MAX_CRON_LEN} characters"),
            })
        } else {
            CronParser::builder()
                .seconds(Seconds::Disallowed)
                .year(Year::Disallowed)
                .build()
                .parse(cron.trim())
                .map_err(|e| TicksError::Cron {
                    cron: shown.clone(),
                    reason: e.to_string(),
                })
        };
        match (parsed, zone) {
            (Ok(cron), Some(zone)) if problems.is_empty() => {
                let ticks = Self { cron, zone };
                // A day that never comes (`0 0 30 2 *`) is found from any starting point.
                if ticks.next_after(Timestamp::UNIX_EPOCH).is_none() {
                    return Err(vec![TicksError::NeverFires { cron: shown }]);
                }
                Ok(ticks)
            }
            (parsed, _) => {
                if let Err(problem) = parsed {
                    problems.insert(0, problem);
                }
                Err(problems)
            }
        }
    }

    /// The zone the cron fields are read in.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let mut wall = after.to_zoned(self.zone.clone()).datetime();
        for _ in 0..MAX_STEPS {
            wall = self.next_wall_time(wall)?;
            // In a repeated hour, wall times already seen at their first occurrence are behind.
            if let Some(at) = self.instant(wall)
                && at > after
            {
                return Some(at);
            }
        }
        None
    }

    /// The latest tick at or before `now`.
    pub fn latest_at_or_before(&self, now: Timestamp) -> Option<Timestamp> {
        let mut wall = self.previous_wall_time(now.to_zoned(self.zone.clone()).datetime(), true)?;
        let mut latest = None;
        for _ in 0..MAX_STEPS {
            match self.instant(wall) {
                Some(at) if at <= now => {
                    latest = Some(at);
                    break;
                }
                _ => wall = self.previous_wall_time(wall, false)?,
            }
        }
        // Seen from the second pass through a repeated hour, the wall time just found is at its
        // first occurrence: later ticks of that first pass may be later instants still <= now.
        let mut latest = latest?;
        for _ in 0..MAX_STEPS {
            match self.next_after(latest) {
                Some(next) if next <= now => latest = next,
                _ => break,
            }
        }
        Some(latest)
    }

    /// The instant a wall time fires at (see the module doc for clock changes).
    fn instant(&self, wall: WallTime) -> Option<Timestamp> {
        match self.zone.to_ambiguous_timestamp(wall).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(wall).ok(),
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(wall).ok(),
            AmbiguousOffset::Gap { before, .. } => {
                // Read in the offset before the jump, the wall time lies past the transition:
                // the transition just before it is the jump.
                let past = before.to_timestamp(wall).ok()?;
                let just_after = past.checked_add(jiff::SignedDuration::from_secs(1)).ok()?;
                self.zone
                    .preceding(just_after)
                    .next()
                    .map(|transition| transition.timestamp())
            }
        }
    }

    fn next_wall_time(&self, wall: WallTime) -> Option<WallTime> {
        let next = self
            .cron
            .find_next_occurrence(&as_chrono(wall)?, false)
            .ok()?;
        from_chrono(next)
    }

    fn previous_wall_time(&self, wall: WallTime, inclusive: bool) -> Option<WallTime> {
        let previous = self
            .cron
            .find_previous_occurrence(&as_chrono(wall)?, inclusive)
            .ok()?;
        from_chrono(previous)
    }
}

/// A wall time as croner's input: the same fields, in chrono's UTC (which has no clock changes,
/// so croner only matches fields).
fn as_chrono(wall: WallTime) -> Option<DateTime<Utc>> {
    let seconds = wall.to_zoned(TimeZone::UTC).ok()?.timestamp().as_second();
    DateTime::from_timestamp(seconds, 0)
}

fn from_chrono(at: DateTime<Utc>) -> Option<WallTime> {
    let instant = Timestamp::from_second(at.timestamp()).ok()?;
    Some(instant.to_zoned(TimeZone::UTC).datetime())
}
