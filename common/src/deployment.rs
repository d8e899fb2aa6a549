//! Canary and blue-green deployments (issue 23): the strategy a push asks for (CLI flags, the
//! manifest's `strategy:` fields, the push's multipart `strategy` field as JSON) and the
//! deployment as `GET /v1/apps/{name}/deployment` shows it. The parsers live here so the CLI,
//! the manifest and the server refuse the same spellings with the same words.

use serde::{Deserialize, Serialize};

/// How a push replaces the running revision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    /// Instance by instance (`max_in_flight` at a time): the default.
    #[default]
    Rolling,
    /// The new revision gets a growing share of requests, compared with the old one on the same
    /// traffic; rolled back by itself when worse.
    Canary,
    /// The whole new set starts, then every request switches at once; the old set stays warm for
    /// the grace period.
    Bluegreen,
}

impl StrategyKind {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rolling" | "" => Ok(Self::Rolling),
            "canary" => Ok(Self::Canary),
            "bluegreen" | "blue-green" | "blue_green" => Ok(Self::Bluegreen),
            other => Err(format!(
                "strategy {other:?}: expected rolling, canary or bluegreen"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rolling => "rolling",
            Self::Canary => "canary",
            Self::Bluegreen => "bluegreen",
        }
    }
}

/// What a push asks of its deployment. Defaults: steps 10, 50, 100; 60 s per step; roll back
/// when the new revision's error rate is 5 points above the old one's or its p99 latency 50 %
/// above, once it has seen 50 requests in the step; a blue-green grace of 60 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployStrategy {
    pub kind: StrategyKind,
    /// Canary: the new revision's share of requests, per step, in percent, rising, ending at 100.
    #[serde(default = "default_steps")]
    pub steps: Vec<u32>,
    /// Seconds each canary step lasts; `None` (`pause`, or 0) waits for `deployment continue`.
    #[serde(default = "default_wait")]
    pub step_wait_secs: Option<u64>,
    /// Percentage points the new revision's error rate may exceed the old one's.
    #[serde(default = "default_error_rate")]
    pub max_error_rate: f64,
    /// Percent the new revision's p99 latency may exceed the old one's (judged once the step has
    /// 100 requests of the new revision).
    #[serde(default = "default_p99")]
    pub max_p99_increase: f64,
    /// Requests the new revision must have served in a step before it is judged (or advanced).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Blue-green: seconds the old set stays warm after the switch.
    #[serde(default = "default_wait_secs")]
    pub grace_secs: u64,
}

fn default_steps() -> Vec<u32> {
    vec![10, 50, 100]
}
fn default_wait() -> Option<u64> {
    Some(60)
}
fn default_wait_secs() -> u64 {
    60
}
fn default_error_rate() -> f64 {
    5.0
}
fn default_p99() -> f64 {
    50.0
}
fn default_min_requests() -> u64 {
    50
}

impl Default for DeployStrategy {
    fn default() -> Self {
        Self {
            kind: StrategyKind::Rolling,
            steps: default_steps(),
            step_wait_secs: default_wait(),
            max_error_rate: default_error_rate(),
            max_p99_increase: default_p99(),
            min_requests: default_min_requests(),
            grace_secs: default_wait_secs(),
        }
    }
}

/// The strategy settings as written (flags or manifest), each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrategyInput {
    pub strategy: Option<String>,
    pub steps: Option<String>,
    pub step_wait: Option<String>,
    pub max_error_rate: Option<String>,
    pub max_p99_increase: Option<String>,
    pub min_requests: Option<String>,
    pub grace: Option<String>,
}

impl StrategyInput {
    /// Fields set here win over `base`'s.
    pub fn or(self, base: StrategyInput) -> StrategyInput {
        StrategyInput {
            strategy: self.strategy.or(base.strategy),
            steps: self.steps.or(base.steps),
            step_wait: self.step_wait.or(base.step_wait),
            max_error_rate: self.max_error_rate.or(base.max_error_rate),
            max_p99_increase: self.max_p99_increase.or(base.max_p99_increase),
            min_requests: self.min_requests.or(base.min_requests),
            grace: self.grace.or(base.grace),
        }
    }

    /// The strategy these settings ask for; `None` when no strategy is named or it is `rolling`
    /// (then the other settings must be absent too).
    pub fn parse(&self) -> Result<Option<DeployStrategy>, String> {
        let kind = StrategyKind::parse(self.strategy.as_deref().unwrap_or(""))?;
        if kind == StrategyKind::Rolling {
            let extra = [
                &self.steps,
                &self.step_wait,
                &self.max_error_rate,
                &self.max_p99_increase,
                &self.min_requests,
                &self.grace,
            ]
            .iter()
            .any(|f| f.is_some());
            if extra {
                return Err(
                    "steps, step-wait, thresholds and grace need strategy canary or bluegreen"
                        .into(),
                );
            }
            return Ok(None);
        }
        let mut s = DeployStrategy {
            kind,
            ..Default::default()
        };
        if let Some(v) = &self.steps {
            s.steps = parse_steps(v)?;
        }
        if let Some(v) = &self.step_wait {
            s.step_wait_secs = parse_wait(v)?;
        }
        if let Some(v) = &self.max_error_rate {
            s.max_error_rate = parse_percent("max-error-rate", v)?;
        }
        if let Some(v) = &self.max_p99_increase {
            s.max_p99_increase = parse_percent("max-p99-increase", v)?;
        }
        if let Some(v) = &self.min_requests {
            s.min_requests = v
                .trim()
                .parse()
                .map_err(|_| format!("min-requests {v:?}: expected a whole number"))?;
        }
        if let Some(v) = &self.grace {
            s.grace_secs = parse_duration_secs("grace", v)?;
        }
        s.check()?;
        Ok(Some(s))
    }
}

impl DeployStrategy {
    /// Refuses settings no deployment could follow.
    pub fn check(&self) -> Result<(), String> {
        if self.kind == StrategyKind::Canary {
            if self.steps.is_empty() || self.steps.last() != Some(&100) {
                return Err("steps must end at 100".into());
            }
            if self.steps.windows(2).any(|w| w[0] >= w[1]) || self.steps[0] == 0 {
                return Err("steps must rise from above 0 to 100".into());
            }
        }
        if !(0.0..=100.0).contains(&self.max_error_rate) {
            return Err("max-error-rate must be from 0% to 100%".into());
        }
        if !(self.max_p99_increase >= 0.0 && self.max_p99_increase.is_finite()) {
            return Err("max-p99-increase must be 0% or more".into());
        }
        Ok(())
    }
}

/// `10,50,100` (percent signs allowed).
pub fn parse_steps(v: &str) -> Result<Vec<u32>, String> {
    v.split(',')
        .map(|p| {
            let p = p.trim().trim_end_matches('%');
            p.parse::<u32>()
                .ok()
                .filter(|n| *n <= 100)
                .ok_or_else(|| format!("steps {v:?}: expected percentages like 10,50,100"))
        })
        .collect()
}

/// `60s`, `2m`, `90` (seconds), `1h`.
pub fn parse_duration_secs(field: &str, v: &str) -> Result<u64, String> {
    let t = v.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1),
        Some((i, 'm')) => (&t[..i], 60),
        Some((i, 'h')) => (&t[..i], 3600),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{field} {v:?}: expected a duration like 60s, 2m or 1h"))
}

/// A step wait: a duration, or `pause` / 0 (wait for `deployment continue`).
pub fn parse_wait(v: &str) -> Result<Option<u64>, String> {
    if v.trim().eq_ignore_ascii_case("pause") {
        return Ok(None);
    }
    let n = parse_duration_secs("step-wait", v)?;
    Ok((n > 0).then_some(n))
}

/// `5%`, `5`, `0.5%`.
pub fn parse_percent(field: &str, v: &str) -> Result<f64, String> {
    v.trim()
        .trim_end_matches('%')
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("{field} {v:?}: expected a percentage like 5%"))
}

/// A deployment's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Moving through its steps (or waiting for the new instances to be ready).
    Active,
    /// Waiting for `deployment continue` (a step wait of `pause`).
    Paused,
    /// The new revision serves everything; the old instances are retired.
    Promoted,
    /// Worse than the old revision: back to it.
    RolledBack,
    /// `deployment cancel`, or a newer change superseded it: back to the old revision.
    Cancelled,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => Self::Active,
            "paused" => Self::Paused,
            "promoted" => Self::Promoted,
            "rolled_back" => Self::RolledBack,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Active or paused: the two revisions both run.
    pub fn running(self) -> bool {
        matches!(self, Self::Active | Self::Paused)
    }
}

/// One revision's traffic in the comparison window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevisionTraffic {
    pub revision: i64,
    pub requests: u64,
    /// 5xx answers, connection failures and health failures.
    pub errors: u64,
    /// Percent of `requests`.
    pub error_rate: f64,
    /// Milliseconds; `None` without requests.
    pub p99_ms: Option<f64>,
}

/// `GET /v1/apps/{name}/deployment`: the app's latest canary or blue-green deployment and, while
/// it runs, the live comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentInfo {
    pub id: String,
    pub app: String,
    pub strategy: DeployStrategy,
    pub state: DeploymentState,
    pub old_revision: i64,
    pub new_revision: i64,
    /// Index into `strategy.steps` (canary); blue-green has the one step 100.
    pub step: u32,
    /// The new revision's share of requests now, in percent.
    pub weight: u32,
    /// When the current step started; `None` while the new instances are not all ready.
    pub step_started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Why it ended (or paused), naming the number and the threshold.
    pub reason: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The old revision (baseline, since the deployment started) and the new one (this step).
    pub old: Option<RevisionTraffic>,
    pub new: Option<RevisionTraffic>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_settings_parse_and_refuse() {
        let i = StrategyInput {
            strategy: Some("canary".into()),
            steps: Some("5,25%,100".into()),
            step_wait: Some("2m".into()),
            max_error_rate: Some("1.5%".into()),
            min_requests: Some("10".into()),
            ..Default::default()
        };
        let s = i.parse().unwrap().unwrap();
        assert_eq!(s.steps, [5, 25, 100]);
        assert_eq!(s.step_wait_secs, Some(120));
        assert_eq!(s.max_error_rate, 1.5);
        assert_eq!(s.min_requests, 10);
        assert_eq!(parse_wait("pause").unwrap(), None);
        assert_eq!(parse_wait("0").unwrap(), None);
        let bad = |f: fn(&mut StrategyInput)| {
            let mut i = StrategyInput {
                strategy: Some("canary".into()),
                ..Default::default()
            };
            f(&mut i);
            i.parse().unwrap_err()
        };
        assert!(bad(|i| i.steps = Some("10,50".into())).contains("100"));
        assert!(bad(|i| i.steps = Some("50,10,100".into())).contains("rise"));
        assert!(bad(|i| i.step_wait = Some("soon".into())).contains("duration"));
        assert!(bad(|i| i.strategy = Some("yolo".into())).contains("expected"));
        let rolling = StrategyInput {
            steps: Some("10,100".into()),
            ..Default::default()
        };
        assert!(rolling.parse().is_err());
        assert_eq!(StrategyInput::default().parse().unwrap(), None);
    }
}
