//! template.yaml against the code, offline: every function has its crate and binary and
//! every crate its function; the routes, queues, tables, environment variables and
//! permissions the code expects are declared; the values cfn-lint does not check (it let
//! `ProtocolType: WEBSOCKETS` through) are the ones AWS needs. The template is read as
//! CloudFormation reads it: short-form intrinsics (`!Ref X`, `!GetAtt A.B`, `!Sub s`) become
//! their long forms (`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`, `{"Fn::Sub": "s"}`).

#[path = "aws/schema.rs"]
mod schema;

use bandsync::adapters::aws::env;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

// ------------------------------------------------------------------ loading ------------

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A YAML document as JSON, with CloudFormation's short-form tags expanded.
#[derive(Default)]
struct CfnLoader {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Value>,
    docs: Vec<Value>,
}

enum Frame {
    Seq(Vec<Value>, Option<Tag>, usize),
    Map(Map<String, Value>, Option<String>, Option<Tag>, usize),
}

/// `!Ref X` -> `{"Ref": X}`, `!GetAtt A.B` -> `{"Fn::GetAtt": [A, B]}`, `!Condition C`
/// -> `{"Condition": C}`, any other `!Name v` -> `{"Fn::Name": v}`.
fn intrinsic(tag: Option<Tag>, value: Value) -> Value {
    let Some(tag) = tag.filter(|t| t.handle == "!") else {
        return value;
    };
    let (key, value) = match (tag.suffix.as_str(), value) {
        ("Ref", v) => ("Ref".to_owned(), v),
        ("Condition", v) => ("Condition".to_owned(), v),
        ("GetAtt", Value::String(s)) => {
            let (resource, attribute) = s.split_once('.').expect("!GetAtt Resource.Attribute");
            ("Fn::GetAtt".to_owned(), json!([resource, attribute]))
        }
        (name, v) => (format!("Fn::{name}"), v),
    };
    json!({ key: value })
}

fn plain_scalar(v: &str) -> Value {
    match v {
        "~" | "null" | "" => Value::Null,
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => v
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| {
                v.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Value::from)
            })
            .unwrap_or_else(|| Value::String(v.to_owned())),
    }
}

impl CfnLoader {
    fn push(&mut self, value: Value, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(value),
            Some(Frame::Seq(items, ..)) => items.push(value),
            Some(Frame::Map(map, key, ..)) => match key.take() {
                None => {
                    *key = Some(match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    })
                }
                Some(k) => {
                    assert!(map.insert(k.clone(), value).is_none(), "duplicate key {k}");
                }
            },
        }
    }
}

impl MarkedEventReceiver for CfnLoader {
    fn on_event(&mut self, ev: Event, _mark: Marker) {
        match ev {
            Event::Scalar(v, style, anchor, tag) => {
                let value = if style == TScalarStyle::Plain {
                    plain_scalar(&v)
                } else {
                    Value::String(v)
                };
                self.push(intrinsic(tag, value), anchor);
            }
            Event::SequenceStart(anchor, tag) => self.stack.push(Frame::Seq(vec![], tag, anchor)),
            Event::MappingStart(anchor, tag) => {
                self.stack.push(Frame::Map(Map::new(), None, tag, anchor))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, tag, anchor) = match self.stack.pop().expect("balanced events") {
                    Frame::Seq(items, tag, anchor) => (Value::Array(items), tag, anchor),
                    Frame::Map(map, _, tag, anchor) => (Value::Object(map), tag, anchor),
                };
                self.push(intrinsic(tag, value), anchor);
            }
            Event::Alias(id) => {
                let value = self.anchors.get(&id).cloned().unwrap_or(Value::Null);
                self.push(value, 0);
            }
            _ => {}
        }
    }
}

fn load_yaml(text: &str) -> Value {
    let mut loader = CfnLoader::default();
    Parser::new_from_str(text)
        .load(&mut loader, false)
        .expect("template.yaml is valid YAML");
    loader.docs.into_iter().next().expect("one YAML document")
}

struct Template {
    doc: Value,
}

impl Template {
    fn load() -> Self {
        Self {
            doc: load_yaml(&read("template.yaml")),
        }
    }

    fn resources(&self) -> &Map<String, Value> {
        self.doc["Resources"].as_object().expect("Resources")
    }

    fn resource(&self, id: &str) -> &Value {
        self.resources()
            .get(id)
            .unwrap_or_else(|| panic!("template.yaml has no resource {id}"))
    }

    fn props(&self, id: &str) -> &Value {
        &self.resource(id)["Properties"]
    }

    fn of_type<'a>(&'a self, ty: &'a str) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
        self.resources()
            .iter()
            .filter(move |(_, r)| r["Type"] == ty)
    }

    fn global(&self, property: &str) -> &Value {
        &self.doc["Globals"]["Function"][property]
    }

    /// A function property, or the Globals value when the function does not set it.
    fn function_prop(&self, id: &str, property: &str) -> &Value {
        match &self.props(id)[property] {
            Value::Null => self.global(property),
            v => v,
        }
    }

    /// Function logical id -> its binary (Metadata.BuildProperties.Binary).
    fn functions(&self) -> BTreeMap<String, String> {
        self.of_type("AWS::Serverless::Function")
            .map(|(id, r)| {
                let binary = r["Metadata"]["BuildProperties"]["Binary"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{id}: Metadata.BuildProperties.Binary"));
                (id.clone(), binary.to_owned())
            })
            .collect()
    }

    fn function_id(&self, binary: &str) -> String {
        self.functions()
            .into_iter()
            .find(|(_, b)| b == binary)
            .map(|(id, _)| id)
            .unwrap_or_else(|| panic!("no function in template.yaml builds binary {binary}"))
    }

    /// The function's environment: Globals merged with its own variables.
    fn environment(&self, id: &str) -> Map<String, Value> {
        let mut vars = self.global("Environment")["Variables"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if let Some(own) = self.props(id)["Environment"]["Variables"].as_object() {
            vars.extend(own.clone());
        }
        vars
    }

    /// The function's events of one type, by name.
    fn events<'a>(&'a self, id: &str, ty: &'a str) -> Vec<(&'a String, &'a Value)> {
        self.props(id)["Events"]
            .as_object()
            .map(|events| events.iter().filter(|(_, e)| e["Type"] == ty).collect())
            .unwrap_or_default()
    }

    /// The explicit IAM statements of a function's Policies.
    fn statements(&self, id: &str) -> Vec<&Value> {
        self.props(id)["Policies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["Statement"].as_array())
            .flatten()
            .collect()
    }

    /// SAM policy templates of a function by name (e.g. SQSSendMessagePolicy).
    fn policy_templates<'a>(&'a self, id: &str, name: &str) -> Vec<&'a Value> {
        self.props(id)["Policies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.get(name))
            .collect()
    }
}

fn is_ref(v: &Value, target: &str) -> bool {
    v == &json!({ "Ref": target })
}

fn is_getatt(v: &Value, resource: &str, attribute: &str) -> bool {
    v == &json!({ "Fn::GetAtt": [resource, attribute] })
}

fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => vec![],
        other => vec![other],
    }
}

fn strings(v: &Value) -> Vec<String> {
    as_list(v)
        .into_iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

// ------------------------------------------------------------------ the crates ---------

/// A Cargo.toml, parsed.
fn manifest(path: &str) -> toml::Table {
    read(path)
        .parse()
        .unwrap_or_else(|e| panic!("{path} is not TOML: {e}"))
}

/// The strings of an array of a manifest, e.g. `workspace.members`.
fn manifest_strings(manifest: &toml::Table, table: &str, key: &str) -> Vec<String> {
    manifest[table][key]
        .as_array()
        .unwrap_or_else(|| panic!("Cargo.toml has no {table}.{key}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

/// What a function crate's manifest declares: its package name and its `[[bin]]` names.
struct FunctionCrate {
    package: String,
    bins: Vec<String>,
    manifest: toml::Table,
}

/// functions/<dir> -> what its Cargo.toml declares.
fn function_crates() -> BTreeMap<String, FunctionCrate> {
    std::fs::read_dir(root().join("functions"))
        .expect("functions/")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| {
            let dir = e.file_name().to_string_lossy().into_owned();
            let manifest = manifest(&format!("functions/{dir}/Cargo.toml"));
            let package = manifest["package"]["name"]
                .as_str()
                .expect("package.name")
                .to_owned();
            let bins = manifest
                .get("bin")
                .and_then(toml::Value::as_array)
                .into_iter()
                .flatten()
                .map(|b| b["name"].as_str().expect("bin.name").to_owned())
                .collect();
            (
                dir,
                FunctionCrate {
                    package,
                    bins,
                    manifest,
                },
            )
        })
        .collect()
}

/// The features a function enables on `bandsync`: on the dependency, or from one of its
/// own features (`bandsync/<feature>`).
fn bandsync_features(manifest: &toml::Table) -> Vec<String> {
    let strings = |v: Option<&toml::Value>| -> Vec<String> {
        v.and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .map(|f| f.as_str().expect("a feature").to_owned())
            .collect()
    };
    let mut out = strings(
        manifest["dependencies"]
            .get("bandsync")
            .and_then(|d| d.get("features")),
    );
    for (_, enables) in manifest
        .get("features")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
    {
        out.extend(
            strings(Some(enables))
                .into_iter()
                .filter_map(|f| f.strip_prefix("bandsync/").map(str::to_owned)),
        );
    }
    out
}

fn main_rs(binary: &str) -> String {
    read(format!("functions/{binary}/src/main.rs"))
}

/// A function's main with the body of each `wiring::<handler>` it calls (in
/// shared/src/wiring.rs): every part the function asks its AwsContext for.
fn main_and_wiring(binary: &str) -> String {
    let main = main_rs(binary);
    let wiring = read("shared/src/wiring.rs");
    let mut text = main.clone();
    for (i, _) in main.match_indices("wiring::") {
        let name: String = main[i + "wiring::".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let start = wiring
            .find(&format!("pub fn {name}("))
            .unwrap_or_else(|| panic!("{binary}: no wiring::{name} in shared/src/wiring.rs"));
        text.push_str(fn_text(&wiring[start..]));
    }
    text
}

/// The text of the function `source` starts with, up to the brace that closes its body:
/// braces are counted outside string and char literals and comments, so a nested block
/// or another layout does not cut it short.
fn fn_text(source: &str) -> &str {
    let bytes = source.as_bytes();
    let (mut depth, mut i) = (0usize, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i += source[i..].find('\n').unwrap_or(source.len() - i);
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            // A char literal ('{', '\'', '\\'), not a lifetime ('a).
            b'\'' if bytes.get(i + 2) == Some(&b'\'') => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\\') => {
                i += 2 + source[i + 2..].find('\'').unwrap_or(0);
            }
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &source[..=i];
                }
            }
            _ => {}
        }
        i += 1;
    }
    source
}

#[test]
fn every_function_has_its_crate_and_every_crate_its_function() {
    let t = Template::load();
    let functions = t.functions();
    assert_eq!(functions.len(), 8, "the eight functions of the design");
    let crates = function_crates();
    let binaries: BTreeSet<&String> = functions.values().collect();
    let dirs: BTreeSet<&String> = crates.keys().collect();
    assert_eq!(
        binaries, dirs,
        "template functions vs functions/<name> crates"
    );

    for (id, binary) in &functions {
        let krate = &crates[binary];
        assert_eq!(
            &krate.package, binary,
            "{id}: functions/{binary}/Cargo.toml must be package `{binary}`"
        );
        assert!(
            krate.bins.is_empty() || krate.bins == [binary.clone()],
            "{id}: functions/{binary} must build exactly the binary `{binary}`: {:?}",
            krate.bins
        );
        let main = main_rs(binary);
        assert!(
            main.contains("lambda_runtime::run("),
            "{binary}: main.rs runs lambda_runtime"
        );
        assert!(
            main.contains("bandsync::transport::telemetry::init()"),
            "{binary}: main.rs sets up logs"
        );
        assert!(
            main.lines().count() <= 30,
            "{binary}: main.rs stays short (<= 30 lines)"
        );
    }

    // `cargo lambda build --bin <f>` at the root only finds the default members' binaries,
    // and must not select infra/local (it would unify `bandsync/local` into the Lambdas).
    let cargo = manifest("Cargo.toml");
    let members = manifest_strings(&cargo, "workspace", "members");
    let defaults = manifest_strings(&cargo, "workspace", "default-members");
    for binary in &binaries {
        let path = format!("functions/{binary}");
        assert!(members.contains(&path), "workspace members lack {path}");
        assert!(defaults.contains(&path), "default-members lack {path}");
    }
    for not_default in [
        "shared",
        "infra/local",
        "infra/testkit",
        "infra/google-fake",
    ] {
        assert!(
            !defaults.iter().any(|d| d == not_default),
            "default-members must not include {not_default}"
        );
    }
    for binary in &binaries {
        let krate = &crates[binary.as_str()];
        let features = bandsync_features(&krate.manifest);
        assert!(
            !features.iter().any(|f| f == "local"),
            "{binary} must not enable bandsync/local: {features:?}"
        );
        let deps = krate.manifest["dependencies"]
            .as_table()
            .expect("[dependencies]");
        for test_only in ["bandsync-testkit", "bandsync-google-fake"] {
            assert!(
                !deps.contains_key(test_only),
                "{binary} must not depend on {test_only}"
            );
        }
    }
}

/// What must never ship in a Lambda: the test kit, the Google fakes, and what only
/// they, the local stack or the document generator use.
const NOT_IN_A_FUNCTION: [&str; 5] = [
    "bandsync-testkit",
    "bandsync-google-fake",
    "axum",
    "schemars",
    "rusqlite",
];

/// `cargo metadata` of the workspace, for the Lambdas' platform.
fn metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        // The Lambdas' target (arm64, see the template): its dependencies only.
        .args(["metadata", "--format-version", "1"])
        .args(["--filter-platform", "aarch64-unknown-linux-gnu"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON")
}

/// The packages a build of `package` alone links (`cargo tree -p <package> -e normal`):
/// its normal dependencies, following the features each one is asked for. Not the
/// resolve graph of `cargo metadata`: that unifies the features of every workspace
/// member (the test kit turns on `bandsync/local`), which a function's own build does
/// not. Target-specific dependencies are all counted (more, never fewer).
fn normal_closure(meta: &Value, package: &str) -> BTreeSet<String> {
    let packages: HashMap<&str, &Value> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p))
        .collect();
    // Which package each dependency of a package resolved to, by package name.
    let resolved: HashMap<&str, HashMap<&str, &str>> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .map(|node| {
            let deps = node["deps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| {
                    let id = d["pkg"].as_str()?;
                    Some((packages.get(id)?["name"].as_str()?, id))
                })
                .collect();
            (node["id"].as_str().expect("node id"), deps)
        })
        .collect();
    let root_id = packages
        .iter()
        .find(|(_, p)| p["name"] == package && p["source"].is_null())
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("no workspace package {package}"));

    let mut features: HashMap<&str, BTreeSet<String>> = HashMap::new();
    features.insert(root_id, BTreeSet::from(["default".to_owned()]));
    let mut todo = vec![root_id];
    while let Some(id) = todo.pop() {
        let pkg = packages[id];
        let deps: Vec<&Value> = pkg["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].is_null())
            .collect();
        let table = &pkg["features"];
        // Expand the package's features: the optional dependencies they turn on, and the
        // features they ask of a dependency (`dep/feature`, weak `dep?/feature`).
        let mut enabled: BTreeSet<String> = BTreeSet::new();
        let mut on: BTreeSet<String> = BTreeSet::new();
        let mut asked: Vec<(String, String, bool)> = Vec::new();
        let mut queue: Vec<String> = features[id].iter().cloned().collect();
        while let Some(f) = queue.pop() {
            if !enabled.insert(f.clone()) {
                continue;
            }
            match table.get(&f).and_then(Value::as_array) {
                Some(entries) => {
                    for e in entries.iter().filter_map(Value::as_str) {
                        if let Some(dep) = e.strip_prefix("dep:") {
                            on.insert(dep.to_owned());
                        } else if let Some((dep, feature)) = e.split_once('/') {
                            let (dep, weak) = match dep.strip_suffix('?') {
                                Some(dep) => (dep, true),
                                None => (dep, false),
                            };
                            if !weak {
                                on.insert(dep.to_owned());
                                if table.get(dep).is_some() {
                                    queue.push(dep.to_owned());
                                }
                            }
                            asked.push((dep.to_owned(), feature.to_owned(), weak));
                        } else {
                            queue.push(e.to_owned());
                        }
                    }
                }
                // An optional dependency's implicit feature.
                None => {
                    on.insert(f);
                }
            }
        }
        for dep in &deps {
            let name = dep["rename"]
                .as_str()
                .or(dep["name"].as_str())
                .unwrap_or("");
            if dep["optional"] == true && !on.contains(name) {
                continue;
            }
            let Some(dep_id) = resolved
                .get(id)
                .and_then(|r| r.get(dep["name"].as_str().unwrap_or("")))
            else {
                continue; // not for this platform, or not resolved
            };
            let mut wanted: BTreeSet<String> = strings(&dep["features"]).into_iter().collect();
            if dep["uses_default_features"] == true {
                wanted.insert("default".to_owned());
            }
            wanted.extend(
                asked
                    .iter()
                    .filter(|(d, _, _)| d == name)
                    .map(|(_, f, _)| f.clone()),
            );
            let new = !features.contains_key(dep_id);
            let have = features.entry(dep_id).or_default();
            let before = have.len();
            have.extend(wanted);
            if new || have.len() > before {
                todo.push(dep_id);
            }
        }
    }
    features
        .keys()
        .map(|id| packages[id]["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn no_function_links_the_test_kit_the_fakes_or_the_local_stacks_crates() {
    let meta = metadata();
    let crates = function_crates();
    for krate in crates.values() {
        let closure = normal_closure(&meta, &krate.package);
        assert!(
            closure.contains("bandsync") && closure.contains("aws-sdk-dynamodb"),
            "{}: the closure is followed through bandsync[aws]: {closure:?}",
            krate.package
        );
        for banned in NOT_IN_A_FUNCTION {
            assert!(
                !closure.contains(banned),
                "{} links {banned} (cargo tree -p {} -e normal -i {banned})",
                krate.package,
                krate.package
            );
        }
    }
    // The check sees these crates when they are there: the test kit's closure has them.
    let kit = normal_closure(&meta, "bandsync-testkit");
    assert!(kit.contains("rusqlite"), "{kit:?}");
}

#[test]
fn every_function_is_arm64_al2023_built_by_cargo_lambda() {
    let t = Template::load();
    for (id, binary) in t.functions() {
        let r = t.resource(&id);
        assert_eq!(r["Metadata"]["BuildMethod"], "rust-cargolambda", "{id}");
        assert_eq!(t.function_prop(&id, "Runtime"), "provided.al2023", "{id}");
        assert_eq!(
            t.function_prop(&id, "Architectures"),
            &json!(["arm64"]),
            "{id}"
        );
        assert_eq!(t.function_prop(&id, "Handler"), "bootstrap", "{id}");
        // SAM runs cargo lambda in CodeUri and copies <CodeUri>/target/lambda/<bin>/bootstrap:
        // the workspace root, so every function shares one target dir.
        assert_eq!(t.function_prop(&id, "CodeUri"), ".", "{id} ({binary})");
        let timeout = t.function_prop(&id, "Timeout").as_i64().expect("Timeout");
        assert!((1..=900).contains(&timeout), "{id}: Timeout {timeout}");
    }
}

// ------------------------------------------------------------------ HTTP API -----------

#[test]
fn every_http_route_reaches_its_function() {
    let t = Template::load();
    assert_eq!(t.resource("HttpApi")["Type"], "AWS::Serverless::HttpApi");
    let mut expected: BTreeMap<String, &str> = bandsync::api::ROUTES
        .iter()
        .map(|r| (r.to_string(), "api"))
        .collect();
    expected.insert("POST /webhooks/google".into(), "webhook");
    expected.insert("POST /webhooks/folder".into(), "webhook");
    // The operators' routes are the API's too (a route dropped from both would pass).
    for route in [
        "PUT /sync/bands/{band}",
        "PUT /sync/bands/{band}/credentials",
        "DELETE /sync/bands/{band}/credentials",
        "PUT /sync/bands/{band}/sources/{source}",
        "DELETE /sync/bands/{band}/sources/{source}",
        "PUT /sync/bands/{band}/entity-types/{type}",
        "POST /sync/bands/{band}/entities/rebuild",
    ] {
        assert_eq!(expected.get(route), Some(&"api"), "{route}");
    }

    let mut declared: BTreeMap<String, String> = BTreeMap::new();
    for (id, binary) in t.functions() {
        for (name, event) in t.events(&id, "HttpApi") {
            let p = &event["Properties"];
            assert!(
                is_ref(&p["ApiId"], "HttpApi"),
                "{id}.{name}: ApiId !Ref HttpApi"
            );
            // The handlers take ApiGatewayV2httpRequest: payload format 2.0.
            assert_eq!(p["PayloadFormatVersion"], "2.0", "{id}.{name}");
            let route = format!(
                "{} {}",
                p["Method"].as_str().unwrap(),
                p["Path"].as_str().unwrap()
            );
            assert!(
                declared.insert(route.clone(), binary.clone()).is_none(),
                "route {route} declared twice"
            );
        }
    }
    let expected: BTreeMap<String, String> = expected
        .into_iter()
        .map(|(k, v)| (k, v.to_owned()))
        .collect();
    assert_eq!(declared, expected, "HTTP API routes -> functions");
}

// ------------------------------------------------------------------ WebSocket API ------

#[test]
fn websocket_api_routes_to_the_three_functions() {
    let t = Template::load();
    let apis: Vec<_> = t.of_type("AWS::ApiGatewayV2::Api").collect();
    assert_eq!(apis.len(), 1, "one WebSocket API");
    let (api_id, api) = apis[0];
    assert_eq!(api["Properties"]["ProtocolType"], "WEBSOCKET");
    assert_eq!(
        api["Properties"]["RouteSelectionExpression"],
        "$request.body.action"
    );

    let expected = [
        ("$connect", "ws-connect"),
        ("$disconnect", "ws-disconnect"),
        ("$default", "ws-message"),
    ];
    let routes: BTreeMap<String, &Value> = t
        .of_type("AWS::ApiGatewayV2::Route")
        .map(|(_, r)| {
            (
                r["Properties"]["RouteKey"].as_str().unwrap().to_owned(),
                &r["Properties"],
            )
        })
        .collect();
    assert_eq!(
        routes.keys().map(String::as_str).collect::<Vec<_>>(),
        ["$connect", "$default", "$disconnect"]
    );
    for (key, binary) in expected {
        let route = routes[key];
        assert!(is_ref(&route["ApiId"], api_id), "{key}: ApiId");
        let target = route["Target"]["Fn::Sub"]
            .as_str()
            .expect("Target !Sub integrations/${..}");
        let integration = target
            .strip_prefix("integrations/${")
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{key}: Target {target}"));
        let i = t.props(integration);
        assert_eq!(
            t.resource(integration)["Type"],
            "AWS::ApiGatewayV2::Integration"
        );
        assert!(is_ref(&i["ApiId"], api_id), "{integration}: ApiId");
        assert_eq!(i["IntegrationType"], "AWS_PROXY", "{integration}");
        let function = t.function_id(binary);
        let uri = i["IntegrationUri"]["Fn::Sub"]
            .as_str()
            .expect("IntegrationUri !Sub");
        assert!(
            uri.contains(&format!("/functions/${{{function}.Arn}}/invocations")),
            "{key} must invoke {function}: {uri}"
        );

        // API Gateway may invoke the function, for this route of this API only.
        let permission = t
            .of_type("AWS::Lambda::Permission")
            .map(|(_, p)| &p["Properties"])
            .find(|p| is_ref(&p["FunctionName"], &function))
            .unwrap_or_else(|| panic!("no invoke permission for {function}"));
        assert_eq!(permission["Action"], "lambda:InvokeFunction");
        assert_eq!(permission["Principal"], "apigateway.amazonaws.com");
        let source = permission["SourceArn"]["Fn::Sub"]
            .as_str()
            .expect("SourceArn !Sub");
        assert!(
            source.ends_with(&format!(":${{{api_id}}}/*/{key}")),
            "{function}: SourceArn {source}"
        );
    }

    let stages: Vec<_> = t.of_type("AWS::ApiGatewayV2::Stage").collect();
    assert_eq!(stages.len(), 1);
    let stage = &stages[0].1["Properties"];
    assert!(is_ref(&stage["ApiId"], api_id));
    assert!(is_ref(&stage["StageName"], "Stage"));
    let deployments = t.of_type("AWS::ApiGatewayV2::Deployment").count();
    assert!(
        stage["AutoDeploy"] == true || deployments > 0,
        "the stage needs AutoDeploy or a Deployment"
    );
}

// ------------------------------------------------------------------ queues -------------

#[test]
fn queues_are_fifo_with_dead_letter_queues_and_consumers_that_fit() {
    let t = Template::load();
    for (queue, consumer, dlq) in [
        ("SyncQueue", "sync-worker", "SyncDeadLetterQueue"),
        ("BroadcastQueue", "broadcast", "BroadcastDeadLetterQueue"),
    ] {
        let q = t.props(queue);
        assert_eq!(q["FifoQueue"], true, "{queue}");
        // The senders give explicit MessageDeduplicationIds.
        assert_ne!(q["ContentBasedDeduplication"], true, "{queue}");
        let redrive = &q["RedrivePolicy"];
        assert!(
            is_getatt(&redrive["deadLetterTargetArn"], dlq, "Arn"),
            "{queue} -> {dlq}"
        );
        assert_eq!(redrive["maxReceiveCount"], 5, "{queue}");
        assert_eq!(
            t.props(dlq)["FifoQueue"],
            true,
            "{dlq}: a FIFO queue's DLQ is FIFO"
        );
        assert_eq!(
            t.props(dlq)["MessageRetentionPeriod"],
            1209600,
            "{dlq}: 14 days"
        );

        // Exactly one consumer, the expected function, with partial batch responses.
        let consumers: Vec<(String, &Value)> = t
            .functions()
            .into_keys()
            .flat_map(|id| {
                t.events(&id, "SQS")
                    .into_iter()
                    .filter(|(_, e)| is_getatt(&e["Properties"]["Queue"], queue, "Arn"))
                    .map(|(_, e)| (id.clone(), &e["Properties"]))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(consumers.len(), 1, "{queue}: one consumer");
        let (function, event) = &consumers[0];
        assert_eq!(function, &t.function_id(consumer), "{queue} consumer");
        assert_eq!(event["BatchSize"], 10, "{queue}: BatchSize (FIFO max 10)");
        assert!(
            strings(&event["FunctionResponseTypes"]).contains(&"ReportBatchItemFailures".into()),
            "{queue}: ReportBatchItemFailures"
        );
        let timeout = t.function_prop(function, "Timeout").as_i64().unwrap();
        let visibility = q["VisibilityTimeout"].as_i64().expect("VisibilityTimeout");
        assert!(
            visibility >= 6 * timeout,
            "{queue}: VisibilityTimeout {visibility} < 6 x {function} Timeout {timeout}"
        );
    }
}

// ------------------------------------------------------------------ environment --------

/// What each AwsContext accessor reads (shared/src/adapters/aws/mod.rs), and what the
/// variable must point at.
fn accessor_env() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (".store()", env::SYNC_TABLE, "SyncTable"),
        (".store()", env::CONNECTIONS_TABLE, "ConnectionsTable"),
        (".sync_queue()", env::SYNC_QUEUE_URL, "SyncQueue"),
        (
            ".broadcast_queue()",
            env::BROADCAST_QUEUE_URL,
            "BroadcastQueue",
        ),
        (".notifier()", env::ALERT_TOPIC_ARN, "AlertTopic"),
        (".health_checks()", env::SYNC_QUEUE_URL, "SyncQueue"),
        (
            ".health_checks()",
            env::BROADCAST_QUEUE_URL,
            "BroadcastQueue",
        ),
        (".tokens()", env::JWT_SECRET, "JwtSecret"),
        (".google(", env::CREDENTIALS_KEY, "CredentialsKey"),
        (".credentials_key()", env::CREDENTIALS_KEY, "CredentialsKey"),
        (".watch()", env::CREDENTIALS_KEY, "CredentialsKey"),
    ]
}

#[test]
fn every_function_gets_the_environment_its_main_reads_and_no_secret_it_does_not() {
    let t = Template::load();
    for (id, binary) in t.functions() {
        let main = main_and_wiring(&binary);
        let vars = t.environment(&id);
        assert!(is_ref(&vars["RUST_LOG"], "LogLevel"), "{id}: RUST_LOG");
        let env = accessor_env();
        let needed = |var: &str| {
            env.iter()
                .any(|(accessor, v, _)| *v == var && main.contains(accessor))
        };
        for (accessor, var, target) in accessor_env() {
            if main.contains(accessor) {
                let value = vars
                    .get(var)
                    .unwrap_or_else(|| panic!("{id} calls {accessor} but has no {var}"));
                assert!(
                    is_ref(value, target),
                    "{id}: {var} must be !Ref {target}: {value}"
                );
            } else if (var == env::JWT_SECRET || var == env::CREDENTIALS_KEY) && !needed(var) {
                assert!(
                    !vars.contains_key(var),
                    "{id} does not need the secret {var}"
                );
            }
        }
        // Endpoints built from an API's id: (accessor, variable, API, path suffix).
        for (accessor, var, api, suffix) in [
            (".watch()", env::WEBHOOK_URL, "HttpApi", "/webhooks/google"),
            (
                ".pusher()",
                env::WS_MANAGEMENT_ENDPOINT,
                "WebSocketApi",
                "/${Stage}",
            ),
        ] {
            if main.contains(accessor) {
                let url = vars[var]["Fn::Sub"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{id}: {var} !Sub"));
                let prefix = format!("https://${{{api}}}.execute-api.${{AWS::Region}}.");
                assert!(
                    url.starts_with(&prefix) && url.ends_with(suffix),
                    "{id}: {url}"
                );
            } else {
                assert!(!vars.contains_key(var), "{id}: {var}");
            }
        }
        // Variables read straight from the environment (the scheduler's BANDS).
        for name in main.split("std::env::var(\"").skip(1) {
            let name = name.split('"').next().unwrap();
            let value = vars
                .get(name)
                .unwrap_or_else(|| panic!("{id} reads {name}, which the template does not set"));
            if name == "BANDS" {
                assert!(is_ref(value, "Bands"), "{id}: BANDS !Ref Bands");
            }
        }
        assert!(
            !vars.contains_key(env::AWS_ENDPOINT_URL),
            "{id}: AWS_ENDPOINT_URL is for emulators only"
        );
    }
}

// ------------------------------------------------------------------ permissions --------

#[test]
fn policies_grant_each_function_what_it_uses_and_nothing_wide() {
    let t = Template::load();
    for (id, binary) in t.functions() {
        let main = main_and_wiring(&binary);
        let statements = t.statements(&id);
        for s in &statements {
            assert_eq!(s["Effect"], "Allow", "{id}");
            for action in strings(&s["Action"]) {
                assert!(!action.contains('*'), "{id}: wildcard action {action}");
                assert_ne!(
                    action, "dynamodb:Scan",
                    "{id}: request paths Query, never Scan"
                );
            }
            for resource in as_list(&s["Resource"]) {
                assert_ne!(resource, "*", "{id}: Resource *");
            }
        }

        // execute-api:ManageConnections: exactly the functions that post to connections,
        // POST on their own API's @connections only.
        let manage: Vec<&&Value> = statements
            .iter()
            .filter(|s| {
                strings(&s["Action"])
                    .iter()
                    .any(|a| a.starts_with("execute-api:"))
            })
            .collect();
        if main.contains(".pusher()") {
            assert_eq!(manage.len(), 1, "{id}: one ManageConnections statement");
            assert_eq!(
                strings(&manage[0]["Action"]),
                ["execute-api:ManageConnections"]
            );
            let resource = manage[0]["Resource"]["Fn::Sub"].as_str().expect("!Sub");
            assert!(
                resource.contains(":${WebSocketApi}/")
                    && resource.ends_with("/POST/@connections/*"),
                "{id}: ManageConnections on {resource}"
            );
        } else {
            assert!(manage.is_empty(), "{id} does not post to connections");
        }

        // SQS sends only to the queues the function's main takes.
        for send in t.policy_templates(&id, "SQSSendMessagePolicy") {
            let queue = &send["QueueName"];
            let allowed = (is_getatt(queue, "SyncQueue", "QueueName")
                && main.contains(".sync_queue()"))
                || (is_getatt(queue, "BroadcastQueue", "QueueName")
                    && main.contains(".broadcast_queue()"));
            assert!(allowed, "{id}: SQSSendMessagePolicy on {queue}");
        }
        let sends_to = |queue: &str| {
            t.policy_templates(&id, "SQSSendMessagePolicy")
                .iter()
                .any(|q| is_getatt(&q["QueueName"], queue, "QueueName"))
        };
        if main.contains(".sync_queue()") {
            assert!(sends_to("SyncQueue"), "{id} sends sync jobs");
        }
        if main.contains("Publisher::new(") {
            assert!(sends_to("BroadcastQueue"), "{id} publishes broadcasts");
        }
        // /sync/health asks each queue for its attributes.
        if main.contains(".health_checks()") {
            let health = statements
                .iter()
                .find(|s| strings(&s["Action"]) == ["sqs:GetQueueAttributes"])
                .unwrap_or_else(|| panic!("{id}: sqs:GetQueueAttributes for health"));
            let queues = as_list(&health["Resource"]);
            for queue in ["SyncQueue", "BroadcastQueue"] {
                assert!(
                    queues.iter().any(|q| is_getatt(q, queue, "Arn")),
                    "{id}: {queue}"
                );
            }
        }

        // DynamoDB on this stack's tables only.
        let tables: Vec<&Value> = statements
            .iter()
            .filter(|s| {
                strings(&s["Action"])
                    .iter()
                    .any(|a| a.starts_with("dynamodb:"))
            })
            .flat_map(|s| as_list(&s["Resource"]))
            .collect();
        assert!(!tables.is_empty(), "{id}: uses a table");
        for table in tables {
            assert!(
                is_getatt(table, "SyncTable", "Arn") || is_getatt(table, "ConnectionsTable", "Arn"),
                "{id}: DynamoDB resource {table}"
            );
        }
    }
}

// ------------------------------------------------------------------ tables -------------

#[test]
fn tables_match_the_schema_the_adapter_and_the_moto_tests_use() {
    let t = Template::load();
    let key_schema: Vec<Value> = schema::KEY_SCHEMA
        .iter()
        .map(|k| json!({"AttributeName": k.attribute_name, "KeyType": k.key_type}))
        .collect();
    let attributes: Vec<Value> = schema::KEY_SCHEMA
        .iter()
        .map(|k| json!({"AttributeName": k.attribute_name, "AttributeType": k.attribute_type}))
        .collect();
    assert_eq!(
        t.of_type("AWS::DynamoDB::Table").count(),
        schema::TABLES.len()
    );
    for (table, var) in schema::TABLES {
        let p = t.props(table);
        assert_eq!(t.resource(table)["Type"], "AWS::DynamoDB::Table");
        assert_eq!(p["KeySchema"], json!(key_schema), "{table}");
        assert_eq!(p["AttributeDefinitions"], json!(attributes), "{table}");
        assert_eq!(p["BillingMode"], schema::BILLING_MODE, "{table}");
        assert_eq!(
            p["TimeToLiveSpecification"],
            json!({"AttributeName": schema::TTL_ATTRIBUTE, "Enabled": true}),
            "{table}"
        );
        assert_eq!(
            p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
            schema::POINT_IN_TIME_RECOVERY,
            "{table}"
        );
        assert!(p["GlobalSecondaryIndexes"].is_null(), "{table}: no GSI");
        assert!(
            is_ref(&t.global("Environment")["Variables"][var], table),
            "{var}"
        );
    }
}

// ------------------------------------------------------------------ operations ---------

#[test]
fn alarms_cover_dead_letters_errors_throttles_and_age_and_reach_the_topic() {
    let t = Template::load();
    let alarms: Vec<&Value> = t
        .of_type("AWS::CloudWatch::Alarm")
        .map(|(_, a)| &a["Properties"])
        .collect();
    for a in &alarms {
        assert!(
            as_list(&a["AlarmActions"])
                .iter()
                .any(|x| is_ref(x, "AlertTopic")),
            "alarm without the topic: {a}"
        );
    }
    let has = |namespace: &str, metric: &str, dimension: &str, value: &dyn Fn(&Value) -> bool| {
        alarms.iter().any(|a| {
            a["Namespace"] == namespace
                && a["MetricName"] == metric
                && as_list(&a["Dimensions"])
                    .iter()
                    .any(|d| d["Name"] == dimension && value(&d["Value"]))
        })
    };
    // An alarm on one of our own metrics watches one the code emits.
    for a in alarms
        .iter()
        .filter(|a| a["Namespace"] == bandsync::transport::metrics::NAMESPACE)
    {
        let emitted = bandsync::transport::metrics::METRICS.iter().any(|m| {
            a["MetricName"] == m.name
                && as_list(&a["Dimensions"])
                    .iter()
                    .all(|d| d["Name"] == m.dimension.0 && d["Value"] == m.dimension.1)
        });
        assert!(emitted, "alarm on a metric the code does not emit: {a}");
    }
    for dlq in ["SyncDeadLetterQueue", "BroadcastDeadLetterQueue"] {
        assert!(
            has(
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                "QueueName",
                &|v| { is_getatt(v, dlq, "QueueName") }
            ),
            "no alarm on {dlq}"
        );
    }
    for queue in ["SyncQueue", "BroadcastQueue"] {
        assert!(
            has(
                "AWS/SQS",
                "ApproximateAgeOfOldestMessage",
                "QueueName",
                &|v| { is_getatt(v, queue, "QueueName") }
            ),
            "no age alarm on {queue}"
        );
    }
    for id in t.functions().keys() {
        for metric in ["Errors", "Throttles"] {
            assert!(
                has("AWS/Lambda", metric, "FunctionName", &|v: &Value| is_ref(
                    v, id
                )),
                "no {metric} alarm for {id}"
            );
        }
    }
    let topic = t.resource("AlertTopic");
    assert_eq!(topic["Type"], "AWS::SNS::Topic");
    let subscription = t.resource("AlertEmailSubscription");
    assert_eq!(
        subscription["Condition"], "HasAlertEmail",
        "the e-mail is optional"
    );
    assert!(is_ref(
        &subscription["Properties"]["Endpoint"],
        "AlertEmail"
    ));
}

#[test]
fn dashboard_charts_every_emf_metric_and_the_aws_metrics() {
    let t = Template::load();
    let dashboards: Vec<_> = t.of_type("AWS::CloudWatch::Dashboard").collect();
    assert_eq!(dashboards.len(), 1);
    let body = dashboards[0].1["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("DashboardBody !Sub");
    // ${Resource}, ${Resource.Attr}, ${Param}, ${AWS::Region} -> a placeholder that keeps
    // the JSON valid; each must name something that exists.
    let mut plain = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("${") {
        plain.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing }") + start;
        let name = &rest[start + 2..end];
        let base = name.split('.').next().unwrap();
        assert!(
            name.starts_with("AWS::")
                || t.resources().contains_key(base)
                || !t.doc["Parameters"][base].is_null(),
            "dashboard placeholder ${{{name}}} names nothing in the template"
        );
        plain.push_str(&format!("<{name}>"));
        rest = &rest[end + 1..];
    }
    plain.push_str(rest);
    let dashboard: Value = serde_json::from_str(&plain)
        .unwrap_or_else(|e| panic!("DashboardBody is not JSON ({e}):\n{plain}"));

    // Every metric line, with "..." expanded from the line before it.
    let mut lines: Vec<Vec<String>> = vec![];
    for widget in dashboard["widgets"].as_array().unwrap() {
        let mut previous: Vec<String> = vec![];
        for metric in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let parts: Vec<String> = metric
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            let line = if parts.first().is_some_and(|p| p == "...") {
                let tail = &parts[1..];
                let keep = previous.len() - tail.len();
                previous[..keep].iter().chain(tail).cloned().collect()
            } else {
                parts
            };
            if !line.is_empty() {
                previous = line.clone();
                lines.push(line);
            }
        }
    }
    let charted = |want: &[&str]| {
        lines
            .iter()
            .any(|l| l.iter().map(String::as_str).eq(want.iter().copied()))
    };

    use bandsync::transport::metrics::{METRICS, NAMESPACE};
    for must in [
        "EventsOut",
        "DeliveryLatency",
        "SyncDuration",
        "ItemsSynced",
        "ItemsFailed",
        "GoneConnections",
        "FailedPosts",
        "PoisonMessages",
    ] {
        assert!(
            METRICS.iter().any(|m| m.name == must),
            "the code no longer emits {must}"
        );
    }
    // A metric with varying dimensions is charted by a SEARCH over all their values.
    let expressions: Vec<&str> = dashboard["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["properties"]["metrics"].as_array().into_iter().flatten())
        .flat_map(|line| line.as_array().into_iter().flatten())
        .filter_map(|part| part["expression"].as_str())
        .collect();
    for m in METRICS.iter().filter(|m| !m.by.is_empty()) {
        let (dim, value) = m.dimension;
        let schema = format!("{{{NAMESPACE},{dim},{}}}", m.by.join(","));
        let wanted = [
            "SEARCH('".to_owned() + &schema,
            format!("{dim}=\"{value}\""),
            format!("MetricName=\"{}\"", m.name),
        ];
        assert!(
            expressions
                .iter()
                .any(|e| wanted.iter().all(|w| e.contains(w.as_str()))),
            "the dashboard has no SEARCH of {} by {schema}: {expressions:?}",
            m.name
        );
    }
    for m in METRICS.iter().filter(|m| m.by.is_empty()) {
        let (dim, value) = m.dimension;
        assert!(
            charted(&[NAMESPACE, m.name, dim, value]),
            "the dashboard does not chart {} ({dim}={value})",
            m.name
        );
    }
    for id in t.functions().keys() {
        for metric in ["Errors", "Duration"] {
            let name = format!("<{id}>");
            assert!(
                charted(&["AWS/Lambda", metric, "FunctionName", &name]),
                "{metric} of {id}"
            );
        }
    }
    for queue in ["SyncQueue", "BroadcastQueue"] {
        let name = format!("<{queue}.QueueName>");
        for metric in [
            "ApproximateNumberOfMessagesVisible",
            "ApproximateAgeOfOldestMessage",
        ] {
            assert!(
                charted(&["AWS/SQS", metric, "QueueName", &name]),
                "{metric} of {queue}"
            );
        }
    }
    for dlq in ["SyncDeadLetterQueue", "BroadcastDeadLetterQueue"] {
        let name = format!("<{dlq}.QueueName>");
        assert!(
            charted(&[
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                "QueueName",
                &name
            ]),
            "depth of {dlq}"
        );
    }
    for function in ["WsConnectFunction", "WsDisconnectFunction"] {
        let name = format!("<{function}>");
        assert!(
            charted(&["AWS/Lambda", "Invocations", "FunctionName", &name]),
            "connections"
        );
    }
}

#[test]
fn scheduler_ticks_every_five_minutes() {
    let t = Template::load();
    let id = t.function_id("scheduler");
    let schedules = t.events(&id, "Schedule");
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0].1["Properties"]["Schedule"], "rate(5 minutes)");
}

#[test]
fn parameters_and_outputs() {
    let t = Template::load();
    let p = &t.doc["Parameters"];
    assert_eq!(p["JwtSecret"]["NoEcho"], true);
    assert!(p["JwtSecret"]["MinLength"].as_i64() >= Some(32));
    assert_eq!(
        p["AlertEmail"]["Default"], "",
        "the alert e-mail is optional"
    );
    for name in ["Bands", "LogLevel", "Stage"] {
        assert!(!p[name].is_null(), "parameter {name}");
    }
    // Browser pages of other origins: only those named, and none by default.
    assert_eq!(p["AllowedOrigins"]["Default"], "", "no CORS by default");
    assert_eq!(
        t.doc["Conditions"]["HasAllowedOrigins"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "AllowedOrigins"}, ""]}]})
    );
    let cors = &t.resources()["HttpApi"]["Properties"]["CorsConfiguration"]["Fn::If"];
    assert_eq!(cors[0], "HasAllowedOrigins", "{cors}");
    assert_eq!(
        cors[1]["AllowOrigins"],
        json!({"Fn::Split": [",", {"Ref": "AllowedOrigins"}]})
    );
    assert_eq!(
        cors[1]["AllowHeaders"],
        json!(["authorization", "content-type"])
    );
    assert!(cors[1]["MaxAge"].as_i64() > Some(0), "{cors}");
    assert_eq!(cors[2], json!({"Ref": "AWS::NoValue"}));
    // Every method a route has is allowed (a page cannot call what the preflight refuses).
    let allowed: Vec<&str> = cors[1]["AllowMethods"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for route in bandsync::api::ROUTES {
        let method = route.split_once(' ').unwrap().0;
        assert!(allowed.contains(&method), "{route}: {allowed:?}");
    }
    let outputs = t.doc["Outputs"].as_object().unwrap();
    for name in [
        "HttpApiUrl",
        "WebSocketUrl",
        "WebSocketManagementEndpoint",
        "DashboardUrl",
        "SyncQueueUrl",
        "BroadcastQueueUrl",
        "SyncDeadLetterQueueArn",
        "BroadcastDeadLetterQueueArn",
        "SyncTableName",
        "ConnectionsTableName",
        "AlertTopicArn",
    ] {
        assert!(outputs.contains_key(name), "output {name}");
    }
    let ws = outputs["WebSocketUrl"]["Value"]["Fn::Sub"]
        .as_str()
        .unwrap();
    assert!(ws.starts_with("wss://${WebSocketApi}.execute-api.") && ws.ends_with("/${Stage}"));
}

#[test]
fn every_reference_names_something_that_exists() {
    let t = Template::load();
    let known = |name: &str| {
        name.starts_with("AWS::")
            || t.resources().contains_key(name)
            || !t.doc["Parameters"][name].is_null()
    };
    fn walk(v: &Value, known: &dyn Fn(&str) -> bool, path: &str) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("Ref") {
                    assert!(known(target), "{path}: !Ref {target}");
                }
                if let Some(Value::Array(ga)) = map.get("Fn::GetAtt") {
                    let target = ga[0].as_str().unwrap();
                    assert!(known(target), "{path}: !GetAtt {target}");
                }
                if let Some(Value::String(s)) = map.get("Fn::Sub") {
                    for part in s.split("${").skip(1) {
                        let name = part.split('}').next().unwrap();
                        let base = name.split('.').next().unwrap();
                        assert!(name.starts_with('!') || known(base), "{path}: ${{{name}}}");
                    }
                }
                for (k, child) in map {
                    walk(child, known, &format!("{path}.{k}"));
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, known, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }
    walk(&t.doc["Resources"], &known, "Resources");
    walk(&t.doc["Outputs"], &known, "Outputs");
    walk(&t.doc["Globals"], &known, "Globals");
}

#[test]
fn the_loader_expands_short_form_intrinsics() {
    let doc = load_yaml(
        "a: !Ref X\nb: !GetAtt Q.Arn\nc: !Sub 'x-${Y}'\nd: !Not [!Equals [!Ref P, \"\"]]\n\
         e: 900\nf: \"2.0\"\ng: [arm64]\n",
    );
    assert_eq!(doc["a"], json!({"Ref": "X"}));
    assert_eq!(doc["b"], json!({"Fn::GetAtt": ["Q", "Arn"]}));
    assert_eq!(doc["c"], json!({"Fn::Sub": "x-${Y}"}));
    assert_eq!(
        doc["d"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, ""]}]})
    );
    assert_eq!(doc["e"], 900);
    assert_eq!(doc["f"], "2.0");
    assert_eq!(doc["g"], json!(["arm64"]));
}

#[test]
fn a_wiring_function_is_read_up_to_its_own_closing_brace() {
    let source =
        "pub fn a() -> X {\n    if b { \"}\" } else { '}' } // }\n    {\n}\n}\n}\npub fn c() {}";
    assert_eq!(
        fn_text(source),
        &source[..source.len() - "\n}\npub fn c() {}".len()]
    );
    assert_eq!(fn_text("pub fn c() {}"), "pub fn c() {}");
}
