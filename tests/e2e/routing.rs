//! Overrides and the sticky split, through the real binary.

use switchyard_routing::{bucket_of, route_seed};

use crate::harness::*;

#[tokio::test]
async fn header_cookie_and_query_overrides_pick_the_canary() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start(&canary_config(&v1, &v2, 0.0, ""));
    let c = client();

    let (status, slot, body) = get(&c, &gw.url("/api/x"), &[]).await;
    assert_eq!(
        (status, slot.as_str(), body["upstream"].as_str()),
        (200, "v1", Some("v1"))
    );

    let (_, slot, body) = get(&c, &gw.url("/api/x"), &[("X-Gray-Enable", "true")]).await;
    assert_eq!(
        (slot.as_str(), body["upstream"].as_str()),
        ("v2", Some("v2"))
    );
    // `equals` must match exactly.
    let (_, slot, _) = get(&c, &gw.url("/api/x"), &[("X-Gray-Enable", "yes")]).await;
    assert_eq!(slot, "v1");

    let (_, slot, _) = get(
        &c,
        &gw.url("/api/x"),
        &[("Cookie", "a=1; ABTEST_ApiV2=on; b=2")],
    )
    .await;
    assert_eq!(slot, "v2");
    let (_, slot, _) = get(&c, &gw.url("/api/x"), &[("Cookie", "ABTEST_Other=on")]).await;
    assert_eq!(slot, "v1");

    let (_, slot, body) = get(&c, &gw.url("/api/x?a=1&canary"), &[]).await;
    assert_eq!(
        (slot.as_str(), body["query"].as_str()),
        ("v2", Some("a=1&canary"))
    );

    // No route for other paths: JSON 404.
    let (status, slot, body) = get(&c, &gw.url("/elsewhere"), &[]).await;
    assert_eq!((status, slot.as_str()), (404, ""));
    assert_eq!(body["error"]["code"], "no_route");
}

#[tokio::test]
async fn sticky_split_sends_the_weight_share_and_keeps_users_in_place() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let gw = Gateway::start(&canary_config(&v1, &v2, 20.0, ""));
    let c = client();
    let seed = route_seed("api");
    let mut on_canary = 0;
    for i in 0..400 {
        let user = format!("user-{i}");
        let (_, slot, _) = get(&c, &gw.url("/api/item"), &[("x-user-id", &user)]).await;
        // The documented rule: bucket = xxh3(key, seed = xxh3(route)) % 10000, canary when < weight×100.
        let want = if bucket_of(seed, user.as_bytes()) < 2000 {
            "v2"
        } else {
            "v1"
        };
        assert_eq!(slot, want, "{user}");
        on_canary += usize::from(slot == "v2");
        // The same user again, this time by cookie: same decision.
        let (_, again, _) = get(
            &c,
            &gw.url("/api/item"),
            &[("cookie", &format!("uid={user}"))],
        )
        .await;
        assert_eq!(again, slot, "{user} by cookie");
    }
    assert!(
        (50..=110).contains(&on_canary),
        "{on_canary} of 400 on the canary at 20 %"
    );
}

#[tokio::test]
async fn two_replicas_decide_identically() {
    let (v1, v2) = (Upstream::start("v1").await, Upstream::start("v2").await);
    let config = canary_config(&v1, &v2, 35.0, "");
    let (a, b) = (Gateway::start(&config), Gateway::start(&config));
    let c = client();
    for i in 0..100 {
        let user = format!("{i:x}-replica");
        let (_, sa, _) = get(&c, &a.url("/api"), &[("x-user-id", &user)]).await;
        let (_, sb, _) = get(&c, &b.url("/api"), &[("x-user-id", &user)]).await;
        assert_eq!(sa, sb);
    }
}
