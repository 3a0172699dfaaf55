//! Where a keyed request goes: service matching on every Kubernetes name form, ports and case,
//! authority mode, cluster mode (and the cluster header's hygiene), baseline reasons, a route
//! resolved before the filter ran, gRPC, and the VM's health after all of it.

use integration_tests::expect::{self, Outcome, INVALID_KEY, NO_KEY, NO_OVERRIDE, UNKNOWN_KEY};
use integration_tests::sandbox::{
    self, SandboxOptions, CATALOG_BASELINE, CLUSTER_HEADER, DEFAULT_UPSTREAM, INVENTORY_BASELINE,
    INVENTORY_SANDBOX, INVENTORY_SANDBOX_CLUSTER, KEY, LUA_ROUTE_HEADER, PAYMENT_BASELINE,
    PAYMENT_SANDBOX, PAYMENT_SANDBOX_AUTHORITY,
};
use integration_tests::{Protocol, SandboxEnv, TestRequest};

fn keyed(authority: &str, protocol: Protocol) -> TestRequest {
    TestRequest::get(authority, "/orders?id=7")
        .protocol(protocol)
        .header("baggage", "sandbox=feature-x")
}

/// Every way to name `service`: Kubernetes forms, with a trailing dot.
fn name_forms(service: &str) -> Vec<String> {
    sandbox::kubernetes_names(service)
        .into_iter()
        .flat_map(|name| [name.clone(), format!("{name}.")])
        .collect()
}

// ---- authority mode ----

#[tokio::test]
async fn authority_mode_matches_every_kubernetes_name_form() {
    let env = SandboxEnv::start().await;
    for protocol in Protocol::ALL {
        for host in name_forms("payment") {
            let response = env.send(keyed(&host, protocol)).await;
            let echo = expect::routed_to(&response, PAYMENT_SANDBOX);
            assert_eq!(
                echo.authority(),
                PAYMENT_SANDBOX_AUTHORITY,
                "{protocol:?} {host}"
            );
            assert_eq!(echo.path(), "/orders?id=7");
            assert_eq!(echo.method(), "GET");
        }
    }
}

#[tokio::test]
async fn authority_mode_keeps_the_request_port() {
    let env = SandboxEnv::start().await;
    for protocol in Protocol::ALL {
        for (host, port) in [
            ("payment:8080", "8080"),
            ("payment.shop:80", "80"),
            ("payment.shop.svc.cluster.local:443", "443"),
            ("payment.shop.svc.cluster.local.:9000", "9000"),
        ] {
            let response = env.send(keyed(host, protocol)).await;
            let echo = expect::routed_to(&response, PAYMENT_SANDBOX);
            assert_eq!(
                echo.authority(),
                format!("{PAYMENT_SANDBOX_AUTHORITY}:{port}"),
                "{protocol:?} {host}"
            );
        }
    }
}

#[tokio::test]
async fn authority_target_with_a_port_replaces_the_request_port() {
    let mut config = sandbox::default_filter_config();
    config["sandboxes"]["feature-x"]["routes"]["payment"]["authority"] =
        serde_json::json!(format!("{PAYMENT_SANDBOX_AUTHORITY}:9443"));
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config),
        ..SandboxOptions::default()
    })
    .await;
    for protocol in Protocol::ALL {
        for host in ["payment", "payment:8080"] {
            let response = env.send(keyed(host, protocol)).await;
            let echo = expect::routed_to(&response, PAYMENT_SANDBOX);
            assert_eq!(
                echo.authority(),
                format!("{PAYMENT_SANDBOX_AUTHORITY}:9443"),
                "{host}"
            );
        }
    }
}

#[tokio::test]
async fn host_matching_ignores_case() {
    let env = SandboxEnv::start().await;
    for protocol in Protocol::ALL {
        for host in [
            "PAYMENT",
            "Payment.Shop",
            "PAYMENT.SHOP.SVC.CLUSTER.LOCAL:8080",
        ] {
            let response = env.send(keyed(host, protocol)).await;
            let echo = expect::routed_to(&response, PAYMENT_SANDBOX);
            assert!(
                echo.authority().starts_with(PAYMENT_SANDBOX_AUTHORITY),
                "{host} → {}",
                echo.authority()
            );
        }
    }
}

#[tokio::test]
async fn without_key_every_form_stays_on_baseline_untouched() {
    let env = SandboxEnv::start().await;
    for protocol in Protocol::ALL {
        for host in name_forms("payment")
            .into_iter()
            .chain(["payment:8080".to_owned()])
        {
            let response = env
                .send(TestRequest::get(&host, "/").protocol(protocol))
                .await;
            let echo = expect::baseline_at(&response, PAYMENT_BASELINE, &[NO_KEY]);
            assert_eq!(echo.authority(), host, "{protocol:?}: authority untouched");
        }
    }
    assert_eq!(env.upstream(PAYMENT_SANDBOX).request_count(), 0);
}

#[tokio::test]
async fn unknown_key_stays_on_baseline() {
    let env = SandboxEnv::start().await;
    for protocol in Protocol::ALL {
        let response = env
            .send(
                TestRequest::get("payment.shop", "/")
                    .protocol(protocol)
                    .header("baggage", "sandbox=nope"),
            )
            .await;
        let echo = expect::baseline_at(&response, PAYMENT_BASELINE, &[UNKNOWN_KEY]);
        assert_eq!(echo.authority(), "payment.shop");
    }
}

#[tokio::test]
async fn service_not_overridden_by_the_sandbox_stays_on_baseline() {
    let env = SandboxEnv::start().await;
    for protocol in Protocol::ALL {
        for host in ["catalog", "catalog.shop.svc.cluster.local:8080"] {
            let response = env.send(keyed(host, protocol)).await;
            let echo = expect::baseline_at(&response, CATALOG_BASELINE, &[NO_OVERRIDE]);
            assert_eq!(echo.authority(), host);
        }
        // `payment` in another namespace is a different service.
        for host in [
            "payment.other",
            "payment.other.svc.cluster.local",
            "payments.shop",
            "xpayment",
        ] {
            let response = env.send(keyed(host, protocol)).await;
            let echo = expect::baseline_at(&response, DEFAULT_UPSTREAM, &[NO_OVERRIDE]);
            assert_eq!(echo.authority(), host);
        }
    }
}

// ---- cluster mode ----

#[tokio::test]
async fn cluster_mode_sets_the_cluster_header_and_keeps_the_authority() {
    let env = SandboxEnv::start().await;
    for protocol in Protocol::ALL {
        for host in name_forms("inventory")
            .into_iter()
            .chain(["inventory:8080".to_owned()])
        {
            let response = env.send(keyed(&host, protocol)).await;
            let echo = expect::routed_to(&response, INVENTORY_SANDBOX);
            assert_eq!(echo.authority(), host, "{protocol:?}: authority untouched");
            assert_eq!(
                echo.header_values(CLUSTER_HEADER),
                [INVENTORY_SANDBOX_CLUSTER],
                "{protocol:?} {host}"
            );
        }
    }
}

#[tokio::test]
async fn cluster_mode_without_key_goes_to_baseline() {
    let env = SandboxEnv::start().await;
    for protocol in Protocol::ALL {
        let response = env
            .send(TestRequest::get("inventory", "/").protocol(protocol))
            .await;
        let echo = expect::baseline_at(&response, INVENTORY_BASELINE, &[NO_KEY]);
        expect::lacks_header(&echo, CLUSTER_HEADER);
    }
}

#[tokio::test]
async fn client_supplied_cluster_header_is_removed() {
    let env = SandboxEnv::start().await;
    for protocol in Protocol::ALL {
        for cluster in [
            INVENTORY_SANDBOX_CLUSTER,
            "payment-feature-x",
            "no-such-cluster",
        ] {
            // No key: the client cannot steer inventory to a cluster.
            let response = env
                .send(
                    TestRequest::get("inventory", "/")
                        .protocol(protocol)
                        .header(CLUSTER_HEADER, cluster),
                )
                .await;
            let echo = expect::baseline_at(&response, INVENTORY_BASELINE, &[NO_KEY]);
            expect::lacks_header(&echo, CLUSTER_HEADER);

            // Unknown key: same.
            let response = env
                .send(
                    TestRequest::get("inventory", "/")
                        .protocol(protocol)
                        .header("x-sandbox", "nope")
                        .header(CLUSTER_HEADER, cluster),
                )
                .await;
            let echo = expect::baseline_at(&response, INVENTORY_BASELINE, &[UNKNOWN_KEY]);
            expect::lacks_header(&echo, CLUSTER_HEADER);

            // Routed in authority mode: the header does not leak to the sandbox either.
            let response = env
                .send(keyed("payment", protocol).header(CLUSTER_HEADER, cluster))
                .await;
            let echo = expect::routed_to(&response, PAYMENT_SANDBOX);
            expect::lacks_header(&echo, CLUSTER_HEADER);

            // Not overridden, no key: removed on other services too.
            let response = env
                .send(
                    TestRequest::get("catalog", "/")
                        .protocol(protocol)
                        .header(CLUSTER_HEADER, cluster),
                )
                .await;
            let echo = expect::answered_by(&response, CATALOG_BASELINE);
            expect::lacks_header(&echo, CLUSTER_HEADER);
        }
    }
}

#[tokio::test]
async fn cluster_mode_replaces_a_client_supplied_cluster_header() {
    let env = SandboxEnv::start().await;
    for protocol in Protocol::ALL {
        let response = env
            .send(
                keyed("inventory", protocol)
                    .header(CLUSTER_HEADER, "payment-baseline")
                    .header(CLUSTER_HEADER, "catalog-baseline"),
            )
            .await;
        let echo = expect::routed_to(&response, INVENTORY_SANDBOX);
        assert_eq!(
            echo.header_values(CLUSTER_HEADER),
            [INVENTORY_SANDBOX_CLUSTER]
        );
    }
}

// ---- a route resolved before the filter ran ----

#[tokio::test]
async fn reroutes_when_an_earlier_filter_already_resolved_the_route() {
    let env = SandboxEnv::start_with(SandboxOptions {
        resolve_route_first: true,
        ..SandboxOptions::default()
    })
    .await;
    for protocol in Protocol::ALL {
        // Authority mode: Lua saw the baseline route, the request still reaches the sandbox.
        let response = env.send(keyed("payment.shop:8080", protocol)).await;
        let echo = expect::routed_to(&response, PAYMENT_SANDBOX);
        assert_eq!(
            echo.authority(),
            format!("{PAYMENT_SANDBOX_AUTHORITY}:8080")
        );
        assert_eq!(
            echo.header(LUA_ROUTE_HEADER).as_deref(),
            Some("to-payment-baseline"),
            "the route must have been resolved before the filter ran"
        );

        // Cluster mode likewise.
        let response = env.send(keyed("inventory", protocol)).await;
        let echo = expect::routed_to(&response, INVENTORY_SANDBOX);
        assert_eq!(
            echo.header(LUA_ROUTE_HEADER).as_deref(),
            Some("to-inventory-baseline")
        );

        // And a client-supplied cluster header that Lua already routed by is undone.
        let response = env
            .send(
                TestRequest::get("inventory", "/")
                    .protocol(protocol)
                    .header(CLUSTER_HEADER, INVENTORY_SANDBOX_CLUSTER),
            )
            .await;
        let echo = expect::baseline_at(&response, INVENTORY_BASELINE, &[NO_KEY]);
        assert_eq!(
            echo.header(LUA_ROUTE_HEADER).as_deref(),
            Some("by-x-sandbox-cluster")
        );
        expect::lacks_header(&echo, CLUSTER_HEADER);
    }
}

// ---- gRPC ----

#[tokio::test]
async fn grpc_calls_are_routed_to_sandbox_and_baseline() {
    let env = SandboxEnv::start_with(SandboxOptions {
        upstream_http2: true,
        ..SandboxOptions::default()
    })
    .await;
    let call = |authority: &str| TestRequest::grpc(authority, "/shop.v1.Payment/Charge");

    let response = env
        .send(call("payment.shop.svc.cluster.local:50051").header("baggage", "sandbox=feature-x"))
        .await;
    assert_eq!(
        response.upstream().as_deref(),
        Some(PAYMENT_SANDBOX),
        "{response:?}"
    );
    assert_eq!(response.grpc_status().as_deref(), Some("0"), "{response:?}");
    assert_eq!(
        response.header("x-upstream-authority").as_deref(),
        Some(format!("{PAYMENT_SANDBOX_AUTHORITY}:50051").as_str())
    );
    assert!(expect::decision(&response).starts_with("routed;"));

    let response = env.send(call("payment.shop.svc.cluster.local:50051")).await;
    assert_eq!(
        response.upstream().as_deref(),
        Some(PAYMENT_BASELINE),
        "{response:?}"
    );
    assert_eq!(response.grpc_status().as_deref(), Some("0"), "{response:?}");
    expect::assert_baseline_decision(&response, &[NO_KEY]);

    let response = env
        .send(call("inventory:50051").header("x-sandbox", KEY))
        .await;
    assert_eq!(
        response.upstream().as_deref(),
        Some(INVENTORY_SANDBOX),
        "{response:?}"
    );
    assert_eq!(response.grpc_status().as_deref(), Some("0"), "{response:?}");

    let response = env
        .send(call("inventory:50051").header("x-sandbox", "nope"))
        .await;
    assert_eq!(
        response.upstream().as_deref(),
        Some(INVENTORY_BASELINE),
        "{response:?}"
    );
    assert_eq!(response.grpc_status().as_deref(), Some("0"), "{response:?}");
    expect::assert_baseline_decision(&response, &[UNKNOWN_KEY]);
}

// ---- debug header ----

#[tokio::test]
async fn decision_header_only_when_debug_is_on() {
    let mut config = sandbox::default_filter_config();
    config["debug"] = serde_json::json!(false);
    let env = SandboxEnv::start_with(SandboxOptions {
        filter_config: Some(config),
        ..SandboxOptions::default()
    })
    .await;
    for protocol in Protocol::ALL {
        let response = env.send(keyed("payment", protocol)).await;
        expect::answered_by(&response, PAYMENT_SANDBOX);
        assert_eq!(sandbox::decision(&response), None, "{response:?}");
        let response = env
            .send(TestRequest::get("payment", "/").protocol(protocol))
            .await;
        expect::answered_by(&response, PAYMENT_BASELINE);
        assert_eq!(sandbox::decision(&response), None, "{response:?}");
    }
}

// ---- the VM stays healthy ----

#[tokio::test]
async fn mixed_traffic_on_two_workers_leaves_the_vm_healthy() {
    let mut env = SandboxEnv::start_with(SandboxOptions {
        concurrency: 2,
        ..SandboxOptions::default()
    })
    .await;
    let long_baggage = (0..300)
        .map(|i| format!("m{i}=v{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let routed = |upstream| Outcome::Routed { upstream };
    let baseline = |upstream, reason| Outcome::Baseline { upstream, reason };
    for protocol in Protocol::ALL {
        let get = |authority: &str| TestRequest::get(authority, "/").protocol(protocol);
        // (case, request, the one outcome)
        let cases = [
            (
                "payment, key",
                keyed("payment", protocol),
                routed(PAYMENT_SANDBOX),
            ),
            (
                "inventory (cluster mode), key",
                keyed("inventory:8080", protocol),
                routed(INVENTORY_SANDBOX),
            ),
            (
                "catalog (not overridden), key",
                keyed("catalog", protocol),
                baseline(CATALOG_BASELINE, NO_OVERRIDE),
            ),
            ("no key", get("payment"), baseline(PAYMENT_BASELINE, NO_KEY)),
            (
                "500-character key",
                get("payment").header("x-sandbox", &"x".repeat(500)),
                baseline(PAYMENT_BASELINE, INVALID_KEY),
            ),
            (
                "300 baggage members, no key",
                get("payment").header("baggage", &long_baggage),
                baseline(PAYMENT_BASELINE, NO_KEY),
            ),
            (
                "non-UTF-8 baggage value",
                get("payment").header_bytes("baggage", b"sandbox=\xff"),
                baseline(PAYMENT_BASELINE, INVALID_KEY),
            ),
            (
                "tracestate of empty members",
                get("payment").header("tracestate", ",,,=,=="),
                baseline(PAYMENT_BASELINE, NO_KEY),
            ),
            (
                "lone percent sign",
                get("payment").header("baggage", "sandbox=%"),
                baseline(PAYMENT_BASELINE, INVALID_KEY),
            ),
            (
                "escape of a non-UTF-8 byte",
                get("payment").header("baggage", "sandbox=%E9"),
                baseline(PAYMENT_BASELINE, INVALID_KEY),
            ),
            (
                "IPv6 literal authority, key",
                get("[::1]:80").header("x-sandbox", KEY),
                baseline(DEFAULT_UPSTREAM, NO_OVERRIDE),
            ),
            // The filter names no service in an authority it cannot parse; Envoy's `payment:*`
            // domain still takes it to the baseline.
            (
                "non-numeric port, key",
                get("payment:notaport").header("x-sandbox", KEY),
                baseline(PAYMENT_BASELINE, NO_OVERRIDE),
            ),
            (
                "POST with a body, key",
                TestRequest::post("payment", "/")
                    .protocol(protocol)
                    .header("x-sandbox", KEY)
                    .body("{}"),
                routed(PAYMENT_SANDBOX),
            ),
        ];
        for (case, request, expected) in cases {
            let response = env.send(request).await;
            expect::outcome(&format!("{protocol:?} {case}"), &response, expected);
        }
    }
    expect::filter_healthy(&mut env).await;
}
