//! Configuration validation reached deep: the input builds a JSON document shaped like the
//! configuration (right types mostly, wrong ones sometimes, names drawn from valid, nearly
//! valid and hostile pieces). Compiling it must not panic, and whatever compiles must route
//! every configured (sandbox, service) through every configured carrier to its target.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sandbox_router::core::config::{compile, HostFacts};
use sandbox_router::core::describe::describe;
use sandbox_router::core::names::parse_authority_target;
use sandbox_router::core::request::scan;
use sandbox_router::core::router::{Decision, Target};
use sandbox_router::core::time::parse_rfc3339;
use sandbox_router_fuzz::{assert_printable_header_value, trace_enabled};
use serde_json::{json, Map, Value};

const WORDS: &[&str] = &[
    "baseline",
    "reject",
    "strip",
    "allow",
    "deny",
    "2030-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "1969-12-31T23:30:00-01:00",
    "2024-02-29T00:00:00Z",
    "2023-02-29T00:00:00Z",
    "2026-12-01 01:00:00.5+01:00",
    "9999-12-31T23:59:60.999999999-23:59",
    "0000-01-01T00:00:00Z",
    "10.0.0.0/8",
    "10.0.0.1/8",
    "::1/128",
    "0.0.0.0/0",
    "::/0",
    "1.2.3.4/33",
    "fd00::/8",
    "::ffff:10.0.0.0/104",
    "10.0.0.1",
    "sandbox",
    "sb",
    "x-sandbox",
    "X-Sandbox",
    "feature-x",
    "Feature_X.1",
    "content-type",
    "x-sandbox-cluster",
    "baggage",
    "Baggage",
    "tracestate",
    "ot-baggage-sandbox",
    "uberctx-sandbox",
    ":authority",
    "",
    " ",
    "a b",
    "%",
    "%41",
    "\u{0}",
    "\n",
    "é",
    "a=b",
    "a,b",
    "a;b",
    "cluster.local",
    "svc",
    "payment",
    "payment.shop",
    "payment.shop.svc",
    "payment.shop.svc.cluster.local",
    "payment.shop.svc.cluster.local.",
    "Payment.Shop",
    "api.example.com",
    "a.b:8080",
    "a.b:0",
    "a.b:65535",
    "a.b:65536",
    "a.b:",
    "a:1:2",
    ":80",
    "outbound|80||payment.shop.svc.cluster.local",
    "shop",
    "billing",
    "Shop",
    "-shop",
];
const LABELS: &[&str] = &[
    "payment", "shop", "svc", "cluster", "local", "billing", "a", "x", "-a", "a-", "A", "a_b", "",
    "xn--e1a", "0", "é", " ", "*",
];

#[derive(Arbitrary, Debug)]
enum Text {
    Word(u8),
    /// Labels joined by dots, optionally with a port.
    Host(Vec<u8>, Option<u32>),
    Repeat(u8, u16),
    Raw(String),
}

impl Text {
    fn render(&self) -> String {
        match self {
            Text::Word(i) => WORDS[usize::from(*i) % WORDS.len()].to_owned(),
            Text::Host(labels, port) => {
                let mut host = labels
                    .iter()
                    .map(|i| LABELS[usize::from(*i) % LABELS.len()])
                    .collect::<Vec<_>>()
                    .join(".");
                if let Some(port) = port {
                    host.push_str(&format!(":{port}"));
                }
                host
            }
            // Long names around the limits (63-byte labels, 128-byte keys, 253-byte hosts,
            // 1024-byte cluster names).
            Text::Repeat(c, n) => {
                let c = ['a', 'k', '.', '-', 'Z', '9'][usize::from(*c) % 6];
                std::iter::repeat_n(c, usize::from(*n) % 1100).collect()
            }
            Text::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum AnyJson {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Text),
    Array(Vec<AnyJson>),
    Object(Vec<(Text, AnyJson)>),
}

impl AnyJson {
    fn render(&self) -> Value {
        match self {
            AnyJson::Null => Value::Null,
            AnyJson::Bool(b) => json!(b),
            AnyJson::Int(i) => json!(i),
            AnyJson::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            AnyJson::Str(t) => json!(t.render()),
            AnyJson::Array(items) => Value::Array(items.iter().map(AnyJson::render).collect()),
            AnyJson::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.render(), v.render()))
                    .collect(),
            ),
        }
    }
}

/// A field: mostly of the right type, else absent, rarely of any type (so that most documents
/// get past type checks into validation and compilation).
#[derive(Debug)]
enum Field<T> {
    Absent,
    Proper(T),
    Wrong(AnyJson),
}

impl<'a, T: Arbitrary<'a>> Arbitrary<'a> for Field<T> {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        // Out of data reads as 0: absent, so that defaults apply.
        Ok(match u.arbitrary::<u8>()? % 8 {
            0 | 6 => Field::Absent,
            7 if u.arbitrary::<u8>()? < 64 => Field::Wrong(u.arbitrary()?),
            _ => Field::Proper(u.arbitrary()?),
        })
    }
}

trait Render {
    fn render(&self) -> Value;
}

impl Render for Text {
    fn render(&self) -> Value {
        Value::String(Text::render(self))
    }
}
impl Render for bool {
    fn render(&self) -> Value {
        Value::Bool(*self)
    }
}
impl<T: Render> Render for Vec<T> {
    fn render(&self) -> Value {
        Value::Array(self.iter().map(Render::render).collect())
    }
}
impl<T: Render> Render for Vec<(Text, T)> {
    fn render(&self) -> Value {
        Value::Object(self.iter().map(|(k, v)| (k.render(), v.render())).collect())
    }
}

fn put<T: Render>(object: &mut Map<String, Value>, name: &str, field: &Field<T>) {
    match field {
        Field::Absent => {}
        Field::Proper(v) => {
            object.insert(name.to_owned(), v.render());
        }
        Field::Wrong(v) => {
            object.insert(name.to_owned(), v.render());
        }
    }
}

impl<T: Render> Render for Field<T> {
    fn render(&self) -> Value {
        match self {
            Field::Absent => Value::Null,
            Field::Proper(v) => v.render(),
            Field::Wrong(v) => v.render(),
        }
    }
}

/// Now and then, a field the schema does not have.
#[derive(Debug)]
struct Unknown(Option<(Text, AnyJson)>);

impl<'a> Arbitrary<'a> for Unknown {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Unknown(if u.arbitrary::<u8>()? % 16 == 15 {
            Some(u.arbitrary()?)
        } else {
            None
        }))
    }
}

impl Unknown {
    fn add(&self, object: &mut Map<String, Value>) {
        if let Some((k, v)) = &self.0 {
            object.insert(k.render(), v.render());
        }
    }
}

#[derive(Arbitrary, Debug)]
struct RoutingKeySpec {
    baggage: Field<Vec<Text>>,
    headers: Field<Vec<Text>>,
    unknown: Unknown,
}

impl Render for RoutingKeySpec {
    fn render(&self) -> Value {
        let mut o = Map::new();
        put(&mut o, "baggage", &self.baggage);
        put(&mut o, "headers", &self.headers);
        self.unknown.add(&mut o);
        Value::Object(o)
    }
}

#[derive(Arbitrary, Debug)]
struct TargetSpec {
    authority: Field<Text>,
    cluster: Field<Text>,
    unknown: Unknown,
}

impl Render for TargetSpec {
    fn render(&self) -> Value {
        let mut o = Map::new();
        put(&mut o, "authority", &self.authority);
        put(&mut o, "cluster", &self.cluster);
        self.unknown.add(&mut o);
        Value::Object(o)
    }
}

/// Numbers near the limits of rates, bursts and in-flight caps.
#[derive(Arbitrary, Debug)]
enum Num {
    Int(i64),
    Float(f64),
    Edge(u8),
}

impl Render for Num {
    fn render(&self) -> Value {
        match self {
            Num::Int(i) => json!(i),
            Num::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Num::Edge(i) => [
                json!(0),
                json!(1),
                json!(5),
                json!(0.5),
                json!(1e-7),
                json!(1e6),
                json!(1000000.5),
                json!(4294967295u64),
                json!(4294967296u64),
                json!(-1),
                json!(1.5),
                json!(1e300),
                json!(-0.0),
            ][usize::from(*i) % 13]
                .clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct RateSpec {
    requests_per_second: Field<Num>,
    burst: Field<Num>,
    unknown: Unknown,
}

impl Render for RateSpec {
    fn render(&self) -> Value {
        let mut o = Map::new();
        put(&mut o, "requests_per_second", &self.requests_per_second);
        put(&mut o, "burst", &self.burst);
        self.unknown.add(&mut o);
        Value::Object(o)
    }
}

#[derive(Arbitrary, Debug)]
struct BudgetSpec {
    rate_limit: Field<RateSpec>,
    max_in_flight: Field<Num>,
    unknown: Unknown,
}

impl Render for BudgetSpec {
    fn render(&self) -> Value {
        let mut o = Map::new();
        put(&mut o, "rate_limit", &self.rate_limit);
        put(&mut o, "max_in_flight", &self.max_in_flight);
        self.unknown.add(&mut o);
        Value::Object(o)
    }
}

#[derive(Arbitrary, Debug)]
struct TrustSpec {
    sources: Field<Vec<Text>>,
    untrusted: Field<Text>,
    unknown: Unknown,
}

impl Render for TrustSpec {
    fn render(&self) -> Value {
        let mut o = Map::new();
        put(&mut o, "sources", &self.sources);
        put(&mut o, "untrusted", &self.untrusted);
        self.unknown.add(&mut o);
        Value::Object(o)
    }
}

#[derive(Arbitrary, Debug)]
struct OwnerSpec {
    user: Field<Text>,
    change: Field<Text>,
    unknown: Unknown,
}

impl Render for OwnerSpec {
    fn render(&self) -> Value {
        let mut o = Map::new();
        put(&mut o, "user", &self.user);
        put(&mut o, "change", &self.change);
        self.unknown.add(&mut o);
        Value::Object(o)
    }
}

#[derive(Arbitrary, Debug)]
struct SandboxSpec {
    routes: Field<Vec<(Text, Field<TargetSpec>)>>,
    rate_limit: Field<RateSpec>,
    max_in_flight: Field<Num>,
    enforce: Field<bool>,
    owner: Field<OwnerSpec>,
    baseline_writes: Field<Text>,
    baseline_write_exceptions: Field<Vec<Text>>,
    expires_at: Field<Text>,
    unknown: Unknown,
}

impl Render for SandboxSpec {
    fn render(&self) -> Value {
        let mut o = Map::new();
        put(&mut o, "routes", &self.routes);
        put(&mut o, "rate_limit", &self.rate_limit);
        put(&mut o, "max_in_flight", &self.max_in_flight);
        put(&mut o, "enforce", &self.enforce);
        put(&mut o, "owner", &self.owner);
        put(&mut o, "baseline_writes", &self.baseline_writes);
        put(
            &mut o,
            "baseline_write_exceptions",
            &self.baseline_write_exceptions,
        );
        put(&mut o, "expires_at", &self.expires_at);
        self.unknown.add(&mut o);
        Value::Object(o)
    }
}

#[derive(Arbitrary, Debug)]
struct Spec {
    facts_namespace: Option<Text>,
    routing_key: Field<RoutingKeySpec>,
    namespace: Field<Text>,
    cluster_domain: Field<Text>,
    cluster_header: Field<Text>,
    debug: Field<bool>,
    defaults: Field<BudgetSpec>,
    trust: Field<TrustSpec>,
    unknown_keys: Field<Text>,
    sandboxes: Field<Vec<(Text, Field<SandboxSpec>)>>,
    unknown: Unknown,
    /// Pretty-print, or add trailing bytes.
    pretty: bool,
    trailing: Unknown,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fuzz_target!(|spec: Spec| {
    let mut root = Map::new();
    put(&mut root, "routing_key", &spec.routing_key);
    put(&mut root, "namespace", &spec.namespace);
    put(&mut root, "cluster_domain", &spec.cluster_domain);
    put(&mut root, "cluster_header", &spec.cluster_header);
    put(&mut root, "debug", &spec.debug);
    put(&mut root, "defaults", &spec.defaults);
    put(&mut root, "trust", &spec.trust);
    put(&mut root, "unknown_keys", &spec.unknown_keys);
    put(&mut root, "sandboxes", &spec.sandboxes);
    spec.unknown.add(&mut root);
    let root = Value::Object(root);
    let mut json = if spec.pretty {
        serde_json::to_vec_pretty(&root)
    } else {
        serde_json::to_vec(&root)
    }
    .unwrap_or_default();
    if let Some((t, _)) = &spec.trailing.0 {
        json.extend_from_slice(t.render().as_bytes());
    }
    let facts = HostFacts {
        namespace: spec.facts_namespace.as_ref().map(Text::render),
    };

    let router = match compile(&json, &facts) {
        Ok(router) => router,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if trace_enabled() {
                eprintln!("TRACE err {e}");
            }
            return;
        }
    };

    // It compiled, so it is the document we built (trailing bytes were whitespace at most).
    let sandboxes = root.get("sandboxes").and_then(Value::as_object);
    assert_eq!(router.sandbox_count(), sandboxes.map_or(0, Map::len));
    let routing_key = root.get("routing_key");
    let baggage = match routing_key.and_then(|r| r.get("baggage")) {
        Some(v) => strings(Some(v)),
        None => vec!["sandbox".to_owned()],
    };
    let headers = strings(routing_key.and_then(|r| r.get("headers")));
    let mut carriers: Vec<(String, String)> = Vec::new(); // (header name, value with {key})
    for h in &headers {
        carriers.push((h.to_ascii_lowercase(), "{key}".into()));
    }
    for m in &baggage {
        carriers.push(("baggage".into(), format!("{m}={{key}}")));
        carriers.push((
            format!("ot-baggage-{}", m.to_ascii_lowercase()),
            "{key}".into(),
        ));
        carriers.push((
            format!("uberctx-{}", m.to_ascii_lowercase()),
            "{key}".into(),
        ));
        carriers.push(("tracestate".into(), format!("{m}={{key}}")));
    }

    if trace_enabled() {
        let routes: usize = sandboxes
            .into_iter()
            .flatten()
            .map(|(_, s)| {
                s.get("routes")
                    .and_then(Value::as_object)
                    .map_or(0, Map::len)
            })
            .sum();
        eprintln!(
            "TRACE ok sandboxes={} routes={routes} carriers={}",
            router.sandbox_count(),
            carriers.len()
        );
    }
    for (key, sandbox) in sandboxes.into_iter().flatten() {
        let compiled = match router.sandbox(key) {
            Some(s) => s,
            None => panic!("sandbox {key:?} compiled but is not in the table"),
        };
        let expires = sandbox.get("expires_at").and_then(Value::as_str);
        assert_eq!(compiled.expires_at_ns, expires.and_then(parse_rfc3339));
        assert_eq!(compiled.expires_at_ns.is_some(), expires.is_some());
        let routes = sandbox.get("routes").and_then(Value::as_object);
        for (service, target) in routes.into_iter().flatten() {
            let expected = match (
                target.get("authority").and_then(Value::as_str),
                target.get("cluster").and_then(Value::as_str),
            ) {
                (Some(a), None) => match parse_authority_target(a) {
                    Ok((host, port)) => Target::Authority {
                        host: host.into(),
                        port,
                    },
                    Err(e) => panic!("compiled with a bad authority {a:?}: {e}"),
                },
                (None, Some(c)) => Target::Cluster(c.into()),
                other => panic!("compiled with target {other:?}"),
            };
            let written = service.trim_end_matches('.');
            for authority in [
                written.to_owned(),
                written.to_ascii_uppercase(),
                format!("{written}.:8080"),
            ] {
                for (name, value) in &carriers {
                    let value = value.replace("{key}", key);
                    let headers: Vec<(&[u8], &[u8])> = vec![
                        (b":authority", authority.as_bytes()),
                        (name.as_bytes(), value.as_bytes()),
                    ];
                    let request = scan(&router.settings, headers);
                    let decision = router.decide(&request);
                    assert_printable_header_value(&describe(&decision, authority.as_bytes()));
                    match decision {
                        Decision::Route { key: k, target, .. } => {
                            assert_eq!(k.as_str(), key);
                            assert_eq!(*target, expected, "{service} via {name}: {value}");
                        }
                        Decision::Baseline { reason, .. } => panic!(
                            "sandbox {key:?} service {service:?} not routed for authority \
                             {authority:?} via {name}: {value} ({reason:?}); config {}",
                            String::from_utf8_lossy(&json)
                        ),
                    }
                }
            }
        }
    }
});
