//! Checks of the harness itself against plain Envoy (no Wasm filter): the topology routes as
//! the filter tests assume, both protocols work, gRPC trailers come back, stats are readable,
//! and a refused configuration is reported.

use std::time::Duration;

use integration_tests::sandbox::{self, SandboxOptions, CLUSTER_HEADER};
use integration_tests::{
    Bootstrap, Cluster, EnvoyBuilder, Listener, Protocol, SandboxEnv, TestRequest, UpstreamOptions,
    VirtualHost,
};

async fn plain_env() -> SandboxEnv {
    SandboxEnv::start_with(SandboxOptions::without_filter()).await
}

#[tokio::test]
async fn topology_routes_every_name_form_to_its_upstream() {
    let env = plain_env().await;
    let cases: Vec<(String, &str)> = sandbox::kubernetes_names("payment")
        .into_iter()
        .flat_map(|n| {
            [
                n.clone(),
                format!("{n}:8080"),
                format!("{n}."),
                n.to_uppercase(),
            ]
        })
        .map(|h| (h, sandbox::PAYMENT_BASELINE))
        .chain([
            (
                sandbox::PAYMENT_SANDBOX_AUTHORITY.to_owned(),
                sandbox::PAYMENT_SANDBOX,
            ),
            (
                format!("{}:8080", sandbox::PAYMENT_SANDBOX_AUTHORITY),
                sandbox::PAYMENT_SANDBOX,
            ),
            ("inventory.shop".to_owned(), sandbox::INVENTORY_BASELINE),
            ("catalog:9090".to_owned(), sandbox::CATALOG_BASELINE),
            ("elsewhere.example".to_owned(), sandbox::DEFAULT_UPSTREAM),
        ])
        .collect();
    for protocol in Protocol::ALL {
        for (host, upstream) in &cases {
            let response = env
                .send(TestRequest::get(host, "/probe?x=1").protocol(protocol))
                .await;
            assert_eq!(response.status, 200, "{protocol:?} {host}: {response:?}");
            assert_eq!(
                response.upstream().as_deref(),
                Some(*upstream),
                "{protocol:?} {host}: {response:?}"
            );
            let echo = response.echo();
            assert_eq!(
                echo.authority(),
                *host,
                "{protocol:?}: authority passes through unchanged"
            );
            assert_eq!(echo.path(), "/probe?x=1");
        }
    }
}

#[tokio::test]
async fn cluster_header_selects_the_inventory_cluster() {
    let env = plain_env().await;
    for protocol in Protocol::ALL {
        let response = env
            .send(
                TestRequest::get("inventory", "/")
                    .protocol(protocol)
                    .header(CLUSTER_HEADER, sandbox::INVENTORY_SANDBOX_CLUSTER),
            )
            .await;
        assert_eq!(
            response.upstream().as_deref(),
            Some(sandbox::INVENTORY_SANDBOX),
            "{response:?}"
        );
        assert_eq!(
            response.echo().header(CLUSTER_HEADER).as_deref(),
            Some(sandbox::INVENTORY_SANDBOX_CLUSTER)
        );
    }
}

#[tokio::test]
async fn repeated_and_non_utf8_headers_reach_the_upstream() {
    let env = plain_env().await;
    let response = env
        .send(
            TestRequest::get("payment", "/")
                .header("baggage", "a=1")
                .header("baggage", "b=2")
                .header_bytes("x-bytes", b"caf\xe9"),
        )
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.echo();
    assert_eq!(echo.header_values("baggage"), ["a=1", "b=2"]);
    assert_eq!(echo.header("x-bytes").as_deref(), Some("caf\u{fffd}"));
}

#[tokio::test]
async fn grpc_call_gets_trailers_through_envoy() {
    let env = SandboxEnv::start_with(SandboxOptions {
        upstream_http2: true,
        ..SandboxOptions::without_filter()
    })
    .await;
    let response = env
        .send(TestRequest::grpc("payment.shop", "/shop.Payment/Pay"))
        .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(
        response.upstream().as_deref(),
        Some(sandbox::PAYMENT_BASELINE)
    );
    assert_eq!(response.grpc_status().as_deref(), Some("0"), "{response:?}");
    assert_eq!(&response.body[..], &[0, 0, 0, 0, 0]);
}

#[tokio::test]
async fn stats_count_requests() {
    let env = plain_env().await;
    for _ in 0..3 {
        let response = env.send(TestRequest::get("catalog", "/")).await;
        assert_eq!(response.status, 200);
    }
    let stats = env.envoy.stats().await;
    let rq_2xx = stats
        .get("http.ingress.downstream_rq_2xx")
        .copied()
        .unwrap_or_else(|| panic!("no http.ingress.downstream_rq_2xx in {} stats", stats.len()));
    assert_eq!(rq_2xx, 3);
    assert_eq!(
        env.envoy
            .stat("cluster.catalog-baseline.upstream_rq_200")
            .await,
        Some(3)
    );
}

#[tokio::test]
async fn refused_configuration_is_reported_with_the_log() {
    let bootstrap = Bootstrap::new()
        .listener(
            Listener::new("broken")
                .virtual_host(VirtualHost::new("any", ["*"]).to_cluster("no-such-cluster")),
        )
        .cluster(Cluster::new("some-cluster", 1));
    let failed = EnvoyBuilder::new(bootstrap)
        .start_expecting_failure(Duration::from_secs(60))
        .await;
    let status = failed.exit_status.expect("Envoy exits on a bad bootstrap");
    assert!(!status.success(), "exit status {status}");
    assert!(
        failed.log.contains("no-such-cluster"),
        "log:\n{}",
        failed.log
    );
}

#[tokio::test]
async fn lua_resolver_records_the_route_envoy_resolved() {
    let env = SandboxEnv::start_with(SandboxOptions {
        resolve_route_first: true,
        ..SandboxOptions::without_filter()
    })
    .await;
    for (host, route) in [
        ("payment", "to-payment-baseline"),
        ("catalog", "to-catalog-baseline"),
    ] {
        let response = env.send(TestRequest::get(host, "/")).await;
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(
            response.echo().header(sandbox::LUA_ROUTE_HEADER).as_deref(),
            Some(route)
        );
    }
}

#[tokio::test]
async fn slow_upstream_answers_after_its_delay() {
    let delay = Duration::from_millis(500);
    let env = SandboxEnv::start_with(SandboxOptions {
        upstream_options: vec![(
            sandbox::CATALOG_BASELINE.to_owned(),
            UpstreamOptions { delay: Some(delay) },
        )],
        ..SandboxOptions::without_filter()
    })
    .await;
    let started = std::time::Instant::now();
    let response = env.send(TestRequest::get("catalog", "/")).await;
    assert_eq!(
        response.upstream().as_deref(),
        Some(sandbox::CATALOG_BASELINE)
    );
    assert!(
        started.elapsed() >= delay,
        "answered after {:?}",
        started.elapsed()
    );
}
