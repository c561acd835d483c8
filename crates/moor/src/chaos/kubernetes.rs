//! `moor chaos --platform kubernetes`: the same scenarios against a cluster, through `kubectl`.
//!
//! Each scenario becomes a plan of `kubectl` steps (the seed's own commands: delete an app pod, delete the
//! Redis master pod, `SENTINEL FAILOVER`, `rollout restart`). `moor` prints the plan with `--dry-run` and
//! otherwise runs it step by step, with the probe against `--url`. Scenarios that need powers a cluster does
//! not grant to a client (cutting network links, crashing every Redis pod at the same instant) are refused
//! with the reason. The plans are unit-tested; no cluster exists where this is developed, so nothing here
//! pretends one answered.

use super::Scenario;

/// What a step does with its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capture {
    /// Nothing: run it.
    None,
    /// Keep the first line of its output as `$NAME` for later steps.
    As(&'static str),
}

/// One `kubectl` invocation. Arguments may contain `$NAME` placeholders captured by earlier steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What the step is for.
    pub why: &'static str,
    /// The arguments after `kubectl`.
    pub args: Vec<String>,
    /// Whether to keep its output.
    pub capture: Capture,
}

/// Names in the cluster, as the chart creates them.
#[derive(Clone, Debug)]
pub struct Target {
    /// The namespace.
    pub namespace: String,
    /// The Helm release name (`inventory` by default).
    pub release: String,
    /// The Sentinel master name (the chart's `redis.sentinel.masterSet`, `inventory` by default).
    pub master: String,
}

impl Target {
    fn step(&self, why: &'static str, args: &[&str], capture: Capture) -> Step {
        let mut all = vec!["-n".to_owned(), self.namespace.clone()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Step {
            why,
            args: all,
            capture,
        }
    }

    /// `redis-cli` against the Sentinel of pod 0, authenticated with the pod's own `REDIS_PASSWORD` (the
    /// chart protects Sentinels with the same Secret), so the password never appears in the plan. With a
    /// `filter`, the answer is piped through it inside the pod.
    fn sentinel(&self, why: &'static str, command: &[&str], filter: Option<&str>, capture: Capture) -> Step {
        let pod = format!("{}-redis-0", self.release);
        let mut cli = format!(
            "REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli -p 26379 {}",
            command.join(" ")
        );
        if let Some(filter) = filter {
            cli = format!("{cli} | {filter}");
        }
        self.step(
            why,
            &["exec", pod.as_str(), "-c", "sentinel", "--", "sh", "-c", &cli],
            capture,
        )
    }
}

/// The plan of a scenario, or why it cannot run on Kubernetes.
pub fn plan(scenario: Scenario, target: &Target) -> Result<Vec<Step>, &'static str> {
    let app = format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component=app",
        target.release
    );
    let deployment = format!("deployment/{}", target.release);
    let master_pod = "$MASTER_POD";
    Ok(match scenario {
        Scenario::AppKill => vec![
            target.step(
                "pick one app pod",
                &[
                    "get",
                    "pods",
                    "-l",
                    &app,
                    "-o",
                    "jsonpath={.items[0].metadata.name}",
                ],
                Capture::As("POD"),
            ),
            target.step(
                "kill it without grace (seed 000, scenario 1)",
                &["delete", "pod", "$POD", "--grace-period=0", "--force"],
                Capture::None,
            ),
            target.step(
                "wait until the Deployment is whole again",
                &["rollout", "status", &deployment, "--timeout=180s"],
                Capture::None,
            ),
        ],
        Scenario::AppRollingRestart => vec![
            target.step(
                "SIGTERM every pod in turn",
                &["rollout", "restart", &deployment],
                Capture::None,
            ),
            target.step(
                "wait for the rollout",
                &["rollout", "status", &deployment, "--timeout=600s"],
                Capture::None,
            ),
        ],
        Scenario::RedisMasterKill => vec![
            // The chart's Sentinels announce pod host names (<pod>.<headless service>...): the pod is the
            // first label.
            target.sentinel(
                "ask Sentinel which pod is the master",
                &["SENTINEL", "get-master-addr-by-name", &target.master],
                Some("head -n1 | cut -d. -f1"),
                Capture::As("MASTER_POD"),
            ),
            target.step(
                "delete the Redis master pod (seed 000, scenario 2)",
                &["delete", "pod", master_pod, "--grace-period=0", "--force"],
                Capture::None,
            ),
            target.step(
                "wait for the StatefulSet",
                &[
                    "rollout",
                    "status",
                    &format!("statefulset/{}-redis", target.release),
                    "--timeout=300s",
                ],
                Capture::None,
            ),
        ],
        Scenario::RedisPlannedFailover => vec![target.sentinel(
            "planned failover",
            &["SENTINEL", "FAILOVER", &target.master],
            None,
            Capture::None,
        )],
        Scenario::RedisRestartAll => vec![
            target.step(
                "restart every Redis pod (the preStop hands the master over first)",
                &[
                    "rollout",
                    "restart",
                    &format!("statefulset/{}-redis", target.release),
                ],
                Capture::None,
            ),
            target.step(
                "wait for the StatefulSet",
                &[
                    "rollout",
                    "status",
                    &format!("statefulset/{}-redis", target.release),
                    "--timeout=600s",
                ],
                Capture::None,
            ),
        ],
        Scenario::RedisCrashAll => {
            return Err(
                "crashing every Redis pod at the same instant needs node access; run it in the local lab",
            );
        }
        Scenario::RedisPartition => {
            return Err(
                "cutting network links needs a NetworkPolicy controller or node access; run it in the local lab",
            );
        }
        Scenario::BadInput => Vec::new(),
        Scenario::Hostile => {
            return Err(
                "its attack clients bind many loopback source addresses and read the apps' /proc; run it in the local lab",
            );
        }
    })
}

/// Replaces `$NAME` placeholders with captured values.
pub fn substitute(args: &[String], captured: &[(&'static str, String)]) -> Vec<String> {
    args.iter()
        .map(|arg| {
            captured.iter().fold(arg.clone(), |acc, (name, value)| {
                acc.replace(&format!("${name}"), value)
            })
        })
        .collect()
}

/// The plan as shell lines, for `--dry-run` and the docs.
pub fn render(steps: &[Step]) -> String {
    steps
        .iter()
        .map(|s| {
            let capture = match s.capture {
                Capture::None => String::new(),
                Capture::As(name) => format!("{name}=$("),
            };
            let close = if capture.is_empty() { "" } else { ")" };
            format!(
                "# {}\n{capture}kubectl {}{close}\n",
                s.why,
                s.args
                    .iter()
                    .map(|a| shell_quote(a))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect()
}

fn shell_quote(arg: &str) -> String {
    if arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_=./:,$".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// Runs a plan with `kubectl`, in order, stopping at the first failing step.
pub async fn execute(steps: &[Step]) -> anyhow::Result<Vec<String>> {
    let mut captured: Vec<(&'static str, String)> = Vec::new();
    let mut log = Vec::new();
    for step in steps {
        let args = substitute(&step.args, &captured);
        log.push(format!("kubectl {}", args.join(" ")));
        let output = tokio::process::Command::new("kubectl")
            .args(&args)
            .output()
            .await?;
        anyhow::ensure!(
            output.status.success(),
            "`kubectl {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        if let Capture::As(name) = step.capture {
            let value = String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            anyhow::ensure!(
                !value.is_empty(),
                "`kubectl {}` printed nothing for ${name}",
                args.join(" ")
            );
            // `get-master-addr-by-name` prints the IP then the port; keep the IP.
            captured.push((name, value));
        }
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            namespace: "staging".into(),
            release: "inventory".into(),
            master: "inventory".into(),
        }
    }

    #[test]
    fn app_kill_deletes_one_app_pod_then_waits_for_the_rollout() {
        let steps = plan(Scenario::AppKill, &target()).expect("plan");
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].capture, Capture::As("POD"));
        assert_eq!(&steps[1].args[..4], ["-n", "staging", "delete", "pod"]);
        assert_eq!(steps[1].args[4], "$POD");
        assert!(steps[2].args.contains(&"deployment/inventory".to_owned()));
    }

    #[test]
    fn redis_master_kill_finds_the_master_through_sentinel_before_deleting_it() {
        let steps = plan(Scenario::RedisMasterKill, &target()).expect("plan");
        let text = render(&steps);
        let ask = text
            .find("get-master-addr-by-name inventory")
            .expect("asks Sentinel");
        let delete = text
            .find("delete pod $MASTER_POD")
            .expect("deletes the master pod");
        assert!(ask < delete, "the master is looked up first:\n{text}");
        assert!(
            text.contains("exec inventory-redis-0 -c sentinel -- sh -c"),
            "{text}"
        );
        assert!(
            text.contains("redis-cli -p 26379 SENTINEL get-master-addr-by-name inventory"),
            "{text}"
        );
    }

    #[test]
    fn planned_failover_and_rollouts_use_the_seed_commands() {
        let failover = render(&plan(Scenario::RedisPlannedFailover, &target()).expect("plan"));
        assert!(failover.contains("SENTINEL FAILOVER inventory"));
        let rolling = render(&plan(Scenario::AppRollingRestart, &target()).expect("plan"));
        assert!(rolling.find("rollout restart deployment/inventory") < rolling.find("rollout status"));
    }

    #[test]
    fn scenarios_needing_node_access_are_refused_with_a_reason() {
        assert!(plan(Scenario::RedisPartition, &target()).is_err());
        assert!(plan(Scenario::RedisCrashAll, &target()).is_err());
    }

    #[test]
    fn placeholders_are_substituted_in_order() {
        let args = vec!["delete".to_owned(), "pod".to_owned(), "$POD".to_owned()];
        assert_eq!(
            substitute(&args, &[("POD", "inventory-7d9f".into())]),
            ["delete", "pod", "inventory-7d9f"]
        );
    }
}
