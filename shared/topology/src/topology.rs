//! The deployed topology read from the SAM template (`infra/template.yaml`): the event
//! bus, rules (event pattern → SQS targets), queues (FIFO, visibility timeout, redrive to a
//! DLQ with `maxReceiveCount`) and functions (SQS event source: batch size, maximum
//! concurrency, `ReportBatchItemFailures`). The embedded runtime and the emulator tests
//! are wired from this, so there is one source of truth for routing.
//!
//! Both intrinsic styles are understood: `!GetAtt Q.Arn` / `!Ref X` tags and the long form
//! `{"Fn::GetAtt": [Q, Arn]}` / `{"Ref": X}`. A number given as `!Ref <Parameter>` (e.g.
//! `maxReceiveCount: !Ref MaxReceiveCount`) takes the parameter's `Default`.

use std::collections::BTreeMap;

use serde_yaml_ng::Value as Yaml;

/// A rule target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetDef {
    /// Target id within the rule.
    pub id: String,
    /// Logical id of the target queue.
    pub queue: String,
    /// FIFO target: static message group from `SqsParameters` (when present).
    pub message_group_id: Option<String>,
    /// Queue receiving events EventBridge could not deliver (`DeadLetterConfig`).
    pub dead_letter_queue: Option<String>,
}

/// An EventBridge rule on the o2c bus.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDef {
    /// Logical id.
    pub logical_id: String,
    /// Event pattern as JSON.
    pub pattern: serde_json::Value,
    /// Targets.
    pub targets: Vec<TargetDef>,
}

/// Redrive policy of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// Logical id of the DLQ.
    pub dead_letter_queue: String,
    /// Receives before the message moves to the DLQ.
    pub max_receive_count: u32,
}

/// An SQS queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDef {
    /// Logical id.
    pub logical_id: String,
    /// Physical name template (`QueueName`, `${Stage}` placeholders), if set.
    pub name: Option<String>,
    /// FIFO queue.
    pub fifo: bool,
    /// Visibility timeout (seconds; SQS default 30).
    pub visibility_timeout_secs: u32,
    /// Retention (seconds; SQS default 4 days).
    pub retention_secs: u32,
    /// Redrive policy.
    pub redrive: Option<Redrive>,
}

/// A Lambda function with its SQS event source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDef {
    /// Logical id.
    pub logical_id: String,
    /// cargo-lambda binary (= step name).
    pub binary: String,
    /// Logical id of the source queue.
    pub queue: String,
    /// Batch size (SQS event source default 10).
    pub batch_size: u32,
    /// `ScalingConfig.MaximumConcurrency` (2–1000), protects downstream rate limits.
    pub max_concurrency: Option<u32>,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`.
    pub report_batch_item_failures: bool,
    /// Function timeout (seconds).
    pub timeout_secs: u32,
}

/// An EventBridge pipe between two queues (SQS source → SQS target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeDef {
    /// Logical id.
    pub logical_id: String,
    /// Source queue (logical id).
    pub source: String,
    /// Target queue (logical id).
    pub target: String,
    /// Source batch size.
    pub batch_size: u32,
    /// Dynamic path of the FIFO message group (`$.body.detail.payload.engagement_id`).
    pub message_group_path: Option<String>,
    /// Dynamic path of the deduplication id.
    pub deduplication_path: Option<String>,
}

impl PipeDef {
    /// Evaluates a `$.body.a.b` dynamic path against an SQS body holding JSON.
    pub fn eval(path: &str, body: &serde_json::Value) -> Option<String> {
        let rest = path.strip_prefix("$.body")?;
        let mut cur = body;
        for seg in rest.split('.').filter(|s| !s.is_empty()) {
            cur = cur.get(seg)?;
        }
        match cur {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

/// Key attribute of a table or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDef {
    /// Attribute name.
    pub name: String,
    /// `S`, `N` or `B`.
    pub attribute_type: String,
}

/// A global secondary index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// Index name.
    pub name: String,
    /// Partition key.
    pub hash: KeyDef,
    /// Sort key.
    pub range: Option<KeyDef>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection: String,
    /// Projected non-key attributes (INCLUDE).
    pub non_key_attributes: Vec<String>,
}

/// A DynamoDB table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// Logical id.
    pub logical_id: String,
    /// Physical name template.
    pub name: Option<String>,
    /// Partition key.
    pub hash: KeyDef,
    /// Sort key.
    pub range: Option<KeyDef>,
    /// GSIs.
    pub indexes: Vec<IndexDef>,
    /// TTL attribute, when enabled.
    pub ttl_attribute: Option<String>,
}

/// An EventBridge Scheduler schedule that sends a fixed message to a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleDef {
    /// Logical id.
    pub logical_id: String,
    /// Target queue (logical id).
    pub queue: String,
    /// Schedule expression (`cron(…)`, `rate(…)`), or the parameter's default.
    pub expression: String,
    /// The message body template (`${AWS::…}` and `<aws.scheduler.…>` placeholders).
    pub input: String,
}

impl ScheduleDef {
    /// The message the schedule sends at `scheduled_time` (RFC 3339), in `region` / `account`.
    pub fn message(&self, scheduled_time: &str, execution_id: &str, region: &str, account: &str) -> String {
        Topology::resolve(&self.input, "", region, account)
            .replace("<aws.scheduler.scheduled-time>", scheduled_time)
            .replace("<aws.scheduler.execution-id>", execution_id)
            .replace("<aws.scheduler.schedule-arn>", &format!("arn:aws:scheduler:{region}:{account}:schedule/default/{}", self.logical_id))
            .replace("<aws.scheduler.attempt-number>", "1")
    }
}

/// The whole topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Schedules (EventBridge Scheduler → queue).
    pub schedules: Vec<ScheduleDef>,
    /// Logical id of the custom event bus.
    pub bus: String,
    /// Physical name template of the bus.
    pub bus_name: Option<String>,
    /// Physical name template of the archive, if any.
    pub archive_name: Option<String>,
    /// Pipes.
    pub pipes: Vec<PipeDef>,
    /// Tables by logical id.
    pub tables: BTreeMap<String, TableDef>,
    /// Rules on the bus.
    pub rules: Vec<RuleDef>,
    /// Queues by logical id.
    pub queues: BTreeMap<String, QueueDef>,
    /// Functions.
    pub functions: Vec<FunctionDef>,
}

/// A template the runtime cannot be wired from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: {}", .0.join("; "))]
pub struct TopologyError(pub Vec<String>);

/// The SAM template shipped with this build (`infra/template.yaml`): the fallback for an
/// installed binary run outside the repository.
pub const TEMPLATE: &str = include_str!("../../../infra/template.yaml");

/// A template to run, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The YAML.
    pub text: String,
    /// Its path, or `built-in copy`.
    pub origin: String,
}

impl Template {
    /// The copy compiled into this build.
    pub fn built_in() -> Self {
        Self { text: TEMPLATE.to_owned(), origin: "built-in copy (compiled into this binary)".into() }
    }

    /// `explicit` if given; else `infra/template.yaml` in `cwd` or its nearest parent that
    /// has one (a platform team's edit takes effect without a rebuild); else the built-in copy.
    pub fn locate(explicit: Option<&std::path::Path>, cwd: &std::path::Path) -> Result<Self, String> {
        if let Some(p) = explicit {
            let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read template {}: {e}", p.display()))?;
            return Ok(Self { text, origin: p.display().to_string() });
        }
        for dir in cwd.ancestors() {
            let p = dir.join("infra").join("template.yaml");
            if let Ok(text) = std::fs::read_to_string(&p) {
                return Ok(Self { text, origin: p.display().to_string() });
            }
        }
        Ok(Self::built_in())
    }
}

fn get<'a>(v: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    v.as_mapping()?.get(Yaml::String(key.to_owned()))
}

fn untag(v: &Yaml) -> (Option<String>, &Yaml) {
    match v {
        Yaml::Tagged(t) => (Some(t.tag.to_string()), &t.value),
        other => (None, other),
    }
}

/// Logical id referenced by `!Ref X`, `!GetAtt X.Arn`, `{Ref: X}` or `{Fn::GetAtt: [X, Arn]}`.
fn reference(v: &Yaml) -> Option<String> {
    match untag(v) {
        (Some(tag), inner) if tag == "!Ref" => inner.as_str().map(str::to_owned),
        (Some(tag), inner) if tag == "!GetAtt" => match inner {
            Yaml::String(s) => s.split('.').next().map(str::to_owned),
            Yaml::Sequence(seq) => seq.first().and_then(|x| x.as_str()).map(str::to_owned),
            _ => None,
        },
        (None, inner) => {
            if let Some(r) = get(inner, "Ref") {
                return r.as_str().map(str::to_owned);
            }
            match get(inner, "Fn::GetAtt")? {
                Yaml::Sequence(seq) => seq.first().and_then(|x| x.as_str()).map(str::to_owned),
                Yaml::String(s) => s.split('.').next().map(str::to_owned),
                _ => None,
            }
        }
        _ => None,
    }
}

fn as_u32(v: Option<&Yaml>) -> Option<u32> {
    let v = untag(v?).1;
    match v {
        Yaml::Number(n) => n.as_u64().and_then(|x| u32::try_from(x).ok()),
        Yaml::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_bool(v: Option<&Yaml>) -> bool {
    match v.map(|v| untag(v).1) {
        Some(Yaml::Bool(b)) => *b,
        Some(Yaml::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The text of a name: a plain string or `!Sub` / `Fn::Sub` with `${Param}` placeholders.
fn sub_text(v: &Yaml) -> Option<String> {
    match untag(v) {
        (Some(tag), inner) if tag == "!Sub" => inner.as_str().map(str::to_owned),
        (None, Yaml::String(s)) => Some(s.clone()),
        (None, inner) => get(inner, "Fn::Sub").and_then(|x| x.as_str()).map(str::to_owned),
        _ => None,
    }
}

fn key_defs(schema: Option<&Yaml>, attrs: &BTreeMap<String, String>) -> (Option<KeyDef>, Option<KeyDef>) {
    let mut hash = None;
    let mut range = None;
    for k in schema.and_then(|s| s.as_sequence()).into_iter().flatten() {
        let name = get(k, "AttributeName").and_then(|x| x.as_str()).unwrap_or_default().to_owned();
        let def = KeyDef { attribute_type: attrs.get(&name).cloned().unwrap_or_else(|| "S".into()), name };
        match get(k, "KeyType").and_then(|x| x.as_str()) {
            Some("HASH") => hash = Some(def),
            Some("RANGE") => range = Some(def),
            _ => {}
        }
    }
    (hash, range)
}

/// YAML → JSON for event patterns (patterns contain no intrinsics).
fn to_json(v: &Yaml) -> Result<serde_json::Value, String> {
    serde_json::to_value(untag(v).1).map_err(|e| format!("event pattern is not plain JSON data: {e}"))
}

impl Topology {
    /// Parses a SAM / CloudFormation template.
    pub fn from_sam_yaml(text: &str) -> Result<Self, TopologyError> {
        let doc: Yaml = serde_yaml_ng::from_str(text).map_err(|e| TopologyError(vec![format!("not valid YAML: {e}")]))?;
        let resources =
            get(&doc, "Resources").and_then(|r| r.as_mapping()).ok_or_else(|| TopologyError(vec!["no Resources section".into()]))?;
        let mut errs = Vec::new();
        let mut bus = None;
        let mut bus_name = None;
        let mut archive_name = None;
        let mut pipes = Vec::new();
        let mut tables = BTreeMap::new();
        let mut rules = Vec::new();
        let mut queues = BTreeMap::new();
        let mut functions = Vec::new();
        let mut schedules = Vec::new();
        let globals_timeout = get(&doc, "Globals").and_then(|g| get(g, "Function")).and_then(|f| as_u32(get(f, "Timeout")));
        // A number given as `!Ref <Parameter>` takes the parameter's default (what a
        // deploy without an override uses).
        let parameter_u32 = |v: Option<&Yaml>| -> Option<u32> {
            as_u32(v).or_else(|| {
                let name = reference(v?)?;
                as_u32(get(&doc, "Parameters").and_then(|p| get(p, &name)).and_then(|p| get(p, "Default")))
            })
        };

        for (k, res) in resources {
            let Some(id) = k.as_str() else { continue };
            let ty = get(res, "Type").and_then(|t| t.as_str()).unwrap_or_default();
            let props = get(res, "Properties");
            match ty {
                "AWS::Events::EventBus" => {
                    bus = Some(id.to_owned());
                    bus_name = props.and_then(|p| get(p, "Name")).and_then(sub_text);
                }
                "AWS::Events::Archive" => archive_name = props.and_then(|p| get(p, "ArchiveName")).and_then(sub_text),
                "AWS::Scheduler::Schedule" => {
                    let Some(t) = props.and_then(|p| get(p, "Target")) else { continue };
                    let (Some(queue), Some(input)) = (get(t, "Arn").and_then(reference), get(t, "Input").and_then(sub_text)) else {
                        errs.push(format!("{id}: a schedule needs Target.Arn !GetAtt <Queue>.Arn and a Target.Input"));
                        continue;
                    };
                    let expr = props.and_then(|p| get(p, "ScheduleExpression"));
                    let expression = match expr.and_then(reference) {
                        Some(name) => {
                            get(&doc, "Parameters").and_then(|p| get(p, &name)).and_then(|p| get(p, "Default")).and_then(|d| d.as_str())
                        }
                        None => expr.and_then(|e| e.as_str()),
                    }
                    .unwrap_or_default()
                    .to_owned();
                    schedules.push(ScheduleDef { logical_id: id.to_owned(), queue, expression, input });
                }
                "AWS::Pipes::Pipe" => {
                    let Some(p) = props else { continue };
                    let (Some(source), Some(target)) = (get(p, "Source").and_then(reference), get(p, "Target").and_then(reference)) else {
                        errs.push(format!("{id}: pipe Source and Target must be !GetAtt <Queue>.Arn"));
                        continue;
                    };
                    let sqs_target = get(p, "TargetParameters").and_then(|t| get(t, "SqsQueueParameters"));
                    if let Some(t) = get(p, "TargetParameters").and_then(|t| get(t, "InputTemplate")).and_then(|t| t.as_str())
                        && t != "<$.body>"
                    {
                        errs.push(format!("{id}: only InputTemplate `<$.body>` (forward the message body) is supported"));
                    }
                    pipes.push(PipeDef {
                        logical_id: id.to_owned(),
                        source,
                        target,
                        batch_size: as_u32(
                            get(p, "SourceParameters").and_then(|s| get(s, "SqsQueueParameters")).and_then(|s| get(s, "BatchSize")),
                        )
                        .unwrap_or(10),
                        message_group_path: sqs_target.and_then(|t| get(t, "MessageGroupId")).and_then(|x| x.as_str()).map(str::to_owned),
                        deduplication_path: sqs_target
                            .and_then(|t| get(t, "MessageDeduplicationId"))
                            .and_then(|x| x.as_str())
                            .map(str::to_owned),
                    });
                }
                "AWS::DynamoDB::Table" => {
                    let Some(p) = props else { continue };
                    let attrs: BTreeMap<String, String> = get(p, "AttributeDefinitions")
                        .and_then(|a| a.as_sequence())
                        .into_iter()
                        .flatten()
                        .filter_map(|a| {
                            Some((get(a, "AttributeName")?.as_str()?.to_owned(), get(a, "AttributeType")?.as_str()?.to_owned()))
                        })
                        .collect();
                    let (hash, range) = key_defs(get(p, "KeySchema"), &attrs);
                    let Some(hash) = hash else {
                        errs.push(format!("{id}: table without a HASH key"));
                        continue;
                    };
                    let mut indexes = Vec::new();
                    for g in get(p, "GlobalSecondaryIndexes").and_then(|g| g.as_sequence()).into_iter().flatten() {
                        let (h, r) = key_defs(get(g, "KeySchema"), &attrs);
                        let Some(h) = h else { continue };
                        let projection = get(g, "Projection");
                        indexes.push(IndexDef {
                            name: get(g, "IndexName").and_then(|x| x.as_str()).unwrap_or_default().to_owned(),
                            hash: h,
                            range: r,
                            projection: projection
                                .and_then(|x| get(x, "ProjectionType"))
                                .and_then(|x| x.as_str())
                                .unwrap_or("ALL")
                                .to_owned(),
                            non_key_attributes: projection
                                .and_then(|x| get(x, "NonKeyAttributes"))
                                .and_then(|x| x.as_sequence())
                                .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                                .unwrap_or_default(),
                        });
                    }
                    let ttl = get(p, "TimeToLiveSpecification")
                        .filter(|t| as_bool(get(t, "Enabled")))
                        .and_then(|t| get(t, "AttributeName"))
                        .and_then(|x| x.as_str())
                        .map(str::to_owned);
                    tables.insert(
                        id.to_owned(),
                        TableDef {
                            logical_id: id.to_owned(),
                            name: get(p, "TableName").and_then(sub_text),
                            hash,
                            range,
                            indexes,
                            ttl_attribute: ttl,
                        },
                    );
                }
                "AWS::SQS::Queue" => {
                    let p = props;
                    let redrive = p.and_then(|p| get(p, "RedrivePolicy")).map(|r| {
                        let dlq = get(r, "deadLetterTargetArn").and_then(reference);
                        let max = parameter_u32(get(r, "maxReceiveCount"));
                        match (dlq, max) {
                            (Some(d), Some(m)) => Ok(Redrive { dead_letter_queue: d, max_receive_count: m }),
                            _ => Err(format!("{id}: RedrivePolicy needs deadLetterTargetArn (!GetAtt) and maxReceiveCount")),
                        }
                    });
                    let redrive = match redrive {
                        None => None,
                        Some(Ok(r)) => Some(r),
                        Some(Err(e)) => {
                            errs.push(e);
                            None
                        }
                    };
                    queues.insert(
                        id.to_owned(),
                        QueueDef {
                            logical_id: id.to_owned(),
                            name: p.and_then(|p| get(p, "QueueName")).and_then(sub_text),
                            fifo: as_bool(p.and_then(|p| get(p, "FifoQueue"))),
                            visibility_timeout_secs: as_u32(p.and_then(|p| get(p, "VisibilityTimeout"))).unwrap_or(30),
                            retention_secs: as_u32(p.and_then(|p| get(p, "MessageRetentionPeriod"))).unwrap_or(345_600),
                            redrive,
                        },
                    );
                }
                "AWS::Events::Rule" => {
                    let Some(p) = props else {
                        errs.push(format!("{id}: rule without Properties"));
                        continue;
                    };
                    let pattern = match get(p, "EventPattern").map(to_json) {
                        Some(Ok(v)) => v,
                        Some(Err(e)) => {
                            errs.push(format!("{id}: {e}"));
                            continue;
                        }
                        None => {
                            errs.push(format!("{id}: rule without EventPattern"));
                            continue;
                        }
                    };
                    let mut targets = Vec::new();
                    for t in get(p, "Targets").and_then(|t| t.as_sequence()).into_iter().flatten() {
                        let tid = get(t, "Id").and_then(|x| x.as_str()).unwrap_or_default().to_owned();
                        match get(t, "Arn").and_then(reference) {
                            Some(queue) => targets.push(TargetDef {
                                id: tid,
                                queue,
                                message_group_id: get(t, "SqsParameters")
                                    .and_then(|s| get(s, "MessageGroupId"))
                                    .and_then(|m| m.as_str())
                                    .map(str::to_owned),
                                dead_letter_queue: get(t, "DeadLetterConfig").and_then(|d| get(d, "Arn")).and_then(reference),
                            }),
                            None => errs.push(format!("{id}: target `{tid}` Arn must be !GetAtt <Queue>.Arn")),
                        }
                    }
                    rules.push(RuleDef { logical_id: id.to_owned(), pattern, targets });
                }
                "AWS::Serverless::Function" => {
                    let binary = get(res, "Metadata")
                        .and_then(|m| get(m, "BuildProperties"))
                        .and_then(|b| get(b, "Binary"))
                        .and_then(|b| b.as_str())
                        .map(str::to_owned);
                    let Some(binary) = binary else {
                        errs.push(format!("{id}: Metadata.BuildProperties.Binary is required (cargo-lambda)"));
                        continue;
                    };
                    let timeout = as_u32(props.and_then(|p| get(p, "Timeout"))).or(globals_timeout).unwrap_or(3);
                    let events = props.and_then(|p| get(p, "Events")).and_then(|e| e.as_mapping());
                    for (_, ev) in events.into_iter().flatten() {
                        if get(ev, "Type").and_then(|t| t.as_str()) != Some("SQS") {
                            continue;
                        }
                        let Some(ep) = get(ev, "Properties") else {
                            continue;
                        };
                        let Some(queue) = get(ep, "Queue").and_then(reference) else {
                            errs.push(format!("{id}: SQS event Queue must be !GetAtt <Queue>.Arn"));
                            continue;
                        };
                        let report = get(ep, "FunctionResponseTypes")
                            .and_then(|f| f.as_sequence())
                            .is_some_and(|s| s.iter().any(|x| x.as_str() == Some("ReportBatchItemFailures")));
                        functions.push(FunctionDef {
                            logical_id: id.to_owned(),
                            binary: binary.clone(),
                            queue,
                            batch_size: as_u32(get(ep, "BatchSize")).unwrap_or(10),
                            max_concurrency: get(ep, "ScalingConfig").and_then(|s| as_u32(get(s, "MaximumConcurrency"))),
                            report_batch_item_failures: report,
                            timeout_secs: timeout,
                        });
                    }
                }
                _ => {}
            }
        }
        let Some(bus) = bus else {
            errs.push("no AWS::Events::EventBus".into());
            return Err(TopologyError(errs));
        };
        let topo = Topology { schedules, bus, bus_name, archive_name, pipes, tables, rules, queues, functions };
        errs.extend(topo.check());
        if errs.is_empty() { Ok(topo) } else { Err(TopologyError(errs)) }
    }

    /// Structural checks: every reference resolves, every function queue has a DLQ and
    /// reports batch item failures, FIFO-ness is consistent.
    pub fn check(&self) -> Vec<String> {
        let mut errs = Vec::new();
        for r in &self.rules {
            for t in &r.targets {
                if !self.queues.contains_key(&t.queue) {
                    errs.push(format!("{}: target queue {} is not declared", r.logical_id, t.queue));
                }
            }
        }
        for q in self.queues.values() {
            if let Some(rd) = &q.redrive {
                match self.queues.get(&rd.dead_letter_queue) {
                    None => errs.push(format!("{}: DLQ {} is not declared", q.logical_id, rd.dead_letter_queue)),
                    Some(d) if d.fifo != q.fifo => {
                        errs.push(format!("{}: DLQ {} must have the same FIFO type", q.logical_id, d.logical_id))
                    }
                    _ => {}
                }
            }
        }
        for p in &self.pipes {
            match (self.queues.get(&p.source), self.queues.get(&p.target)) {
                (Some(_), Some(t)) => {
                    if t.fifo && p.message_group_path.is_none() {
                        errs.push(format!(
                            "{}: FIFO target {} needs TargetParameters.SqsQueueParameters.MessageGroupId",
                            p.logical_id, t.logical_id
                        ));
                    }
                }
                _ => errs.push(format!("{}: pipe source {} or target {} is not declared", p.logical_id, p.source, p.target)),
            }
        }
        for q in self.queues.values() {
            let consumers = self.functions.iter().filter(|f| f.queue == q.logical_id).count()
                + self.pipes.iter().filter(|p| p.source == q.logical_id).count();
            if consumers > 1 {
                errs.push(format!("{}: consumed by {consumers} functions or pipes (each message would reach only one)", q.logical_id));
            }
        }
        for f in &self.functions {
            match self.queues.get(&f.queue) {
                None => errs.push(format!("{}: source queue {} is not declared", f.logical_id, f.queue)),
                Some(q) => {
                    if q.redrive.is_none() {
                        errs.push(format!("{}: source queue {} has no dead-letter queue", f.logical_id, q.logical_id));
                    }
                    // AWS guidance: visibility timeout ≥ 6 × function timeout for SQS sources.
                    if q.visibility_timeout_secs < f.timeout_secs.saturating_mul(6) {
                        errs.push(format!(
                            "{}: visibility timeout {}s < 6 × function timeout {}s",
                            q.logical_id, q.visibility_timeout_secs, f.timeout_secs
                        ));
                    }
                }
            }
            if !f.report_batch_item_failures {
                errs.push(format!("{}: SQS event source must set FunctionResponseTypes: [ReportBatchItemFailures]", f.logical_id));
            }
            if let Some(c) = f.max_concurrency
                && !(2..=1000).contains(&c)
            {
                errs.push(format!("{}: MaximumConcurrency must be 2..=1000", f.logical_id));
            }
        }
        errs
    }

    /// Resolves a name template for `stage` (`${Stage}`, `${AWS::Region}` and `${AWS::AccountId}`).
    pub fn resolve(template: &str, stage: &str, region: &str, account: &str) -> String {
        template.replace("${Stage}", stage).replace("${AWS::Region}", region).replace("${AWS::AccountId}", account)
    }

    /// Physical name of a queue for `stage` (the logical id when the template names none).
    pub fn queue_name(&self, logical_id: &str, stage: &str) -> String {
        self.queues
            .get(logical_id)
            .and_then(|q| q.name.as_deref())
            .map_or_else(|| logical_id.to_owned(), |n| Self::resolve(n, stage, "", ""))
    }

    /// Physical name of the bus for `stage`.
    pub fn bus_name(&self, stage: &str) -> String {
        self.bus_name.as_deref().map_or_else(|| self.bus.clone(), |n| Self::resolve(n, stage, "", ""))
    }

    /// Physical name of a table for `stage`.
    pub fn table_name(&self, logical_id: &str, stage: &str) -> String {
        self.tables
            .get(logical_id)
            .and_then(|t| t.name.as_deref())
            .map_or_else(|| logical_id.to_owned(), |n| Self::resolve(n, stage, "", ""))
    }

    /// The function a message in `queue` ends up at, following pipes.
    pub fn consumer_function(&self, queue: &str) -> Option<&FunctionDef> {
        let mut q = queue;
        for _ in 0..8 {
            if let Some(f) = self.function_for_queue(q) {
                return Some(f);
            }
            q = &self.pipe_for_queue(q)?.target;
        }
        None
    }

    /// The pipe reading `queue`, if any.
    pub fn pipe_for_queue(&self, queue: &str) -> Option<&PipeDef> {
        self.pipes.iter().find(|p| p.source == queue)
    }

    /// The function consuming `queue`, if any.
    pub fn function_for_queue(&self, queue: &str) -> Option<&FunctionDef> {
        self.functions.iter().find(|f| f.queue == queue)
    }

    /// The source queue whose redrive policy names `dlq`.
    pub fn source_of_dlq(&self, dlq: &str) -> Option<&QueueDef> {
        self.queues.values().find(|q| q.redrive.as_ref().is_some_and(|r| r.dead_letter_queue == dlq))
    }

    /// True when `queue` is some queue's DLQ or a rule target's delivery DLQ.
    pub fn is_dlq(&self, queue: &str) -> bool {
        self.source_of_dlq(queue).is_some()
            || self.rules.iter().flat_map(|r| &r.targets).any(|t| t.dead_letter_queue.as_deref() == Some(queue))
    }

    /// The queues something consumes: each function's event source, then each pipe's source.
    pub fn consumed_queues(&self) -> Vec<String> {
        self.functions.iter().map(|f| f.queue.clone()).chain(self.pipes.iter().map(|p| p.source.clone())).collect()
    }
}
