//! TLS, SASL and authorization against Apache Kafka 4.1.1's own listeners (see
//! docs/security.md, "What is tested against what").
//!
//! The shared broker of `scripts/test-broker up` has four listeners on 127.0.0.1: PLAINTEXT,
//! SASL_PLAINTEXT, SSL (`ssl.client.auth=requested`) and SASL_SSL, with SASL users
//! admin/admin-secret and alice/alice-secret for PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512. Its
//! server certificate names `IP:127.0.0.1` and `DNS:localhost` and is signed by the CA in
//! `LAGBALANCE_KAFKA_TLS_DIR/ca.pem`; `client.pem`/`client.key` there is a client
//! certificate for `CN=alice`. The authorization test starts its own Kafka with the
//! StandardAuthorizer (super users admin and ANONYMOUS).
//!
//! Every refusal must come back as a named error, promptly: [`PROMPT`] bounds how long a
//! refused operation may take (a retry loop would run to the 30 s operation deadline).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::CreateAclsRequest;
use kafka_protocol::protocol::StrBytes;
use lagbalance::consumer::NoopListener;
use lagbalance::fetcher::{FetchConfig, Fetcher, OffsetReset};
use lagbalance::producer::{Producer, ProducerConfig};
use lagbalance::records::ProducerRecord;
use lagbalance::{Client, ClientConfig, Consumer, ConsumerConfig, Error};
use lagbalance_agent::config::Config as AgentConfig;
use lagbalance_agent::poll;
use lagbalance_agent::view::Snapshot;
use lagbalance_integration::secure::{
    client_config, connect, path, produce, produce_fetch_round_trip,
};
use lagbalance_integration::{unique, TestBroker};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// The longest a refused connection or operation may take to report its error.
const PROMPT: Duration = Duration::from_secs(5);
const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// The shared broker's secured endpoints.
struct Kafka {
    broker: TestBroker,
    sasl_plaintext: String,
    ssl: String,
    sasl_ssl: String,
    tls: PathBuf,
}

impl Kafka {
    async fn shared() -> Kafka {
        Self::of(TestBroker::start().await.expect("broker"))
    }

    fn of(broker: TestBroker) -> Kafka {
        let get = |key: &str| {
            broker
                .endpoint(key)
                .unwrap_or_else(|e| panic!("{e} (these tests need Kafka from scripts/test-broker)"))
                .to_owned()
        };
        Kafka {
            sasl_plaintext: get("LAGBALANCE_KAFKA_SASL_PLAINTEXT"),
            ssl: get("LAGBALANCE_KAFKA_SSL"),
            sasl_ssl: get("LAGBALANCE_KAFKA_SASL_SSL"),
            tls: PathBuf::from(get("LAGBALANCE_KAFKA_TLS_DIR")),
            broker,
        }
    }

    fn file(&self, name: &str) -> String {
        path(&self.tls.join(name)).to_owned()
    }

    /// Properties for `protocol` (SASL_PLAINTEXT or SASL_SSL) as `user`.
    fn sasl(&self, protocol: &str, mechanism: &str, user: &str, password: &str) -> Props {
        let mut p = vec![
            ("security.protocol", protocol.to_owned()),
            ("sasl.mechanism", mechanism.to_owned()),
            ("sasl.username", user.to_owned()),
            ("sasl.password", password.to_owned()),
        ];
        if protocol == "SASL_SSL" {
            p.push(("ssl.ca.location", self.file("ca.pem")));
        }
        Props(p)
    }

    /// SSL with the test CA trusted; with `client_cert`, the `CN=alice` certificate too.
    fn ssl_props(&self, client_cert: bool) -> Props {
        let mut p = vec![
            ("security.protocol", "SSL".to_owned()),
            ("ssl.ca.location", self.file("ca.pem")),
        ];
        if client_cert {
            p.push(("ssl.certificate.location", self.file("client.pem")));
            p.push(("ssl.key.location", self.file("client.key")));
        }
        Props(p)
    }
}

/// Kafka properties, owned.
#[derive(Clone)]
struct Props(Vec<(&'static str, String)>);

impl Props {
    fn refs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
    fn with(mut self, key: &'static str, value: &str) -> Props {
        self.0.push((key, value.to_owned()));
        self
    }
    fn client(&self, bootstrap: &str) -> Client {
        Client::new(client_config(bootstrap, &self.refs())).expect("client config")
    }
}

/// Run `op`, which must fail; return its error and check it came within [`PROMPT`].
async fn refused<T, F>(what: &str, op: F) -> Error
where
    F: std::future::Future<Output = lagbalance::Result<T>>,
{
    let started = Instant::now();
    let result = tokio::time::timeout(PROMPT * 4, op)
        .await
        .unwrap_or_else(|_| panic!("{what}: still running after {:?}", PROMPT * 4));
    let took = started.elapsed();
    let Err(e) = result else {
        panic!("{what}: succeeded but must be refused")
    };
    assert!(
        took < PROMPT,
        "{what}: the refusal took {took:?} (retried?): {e}"
    );
    e
}

// ---------------------------------------------------------------------------------------------
// SASL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plaintext_plain_and_scram_round_trip() {
    let kafka = Kafka::shared().await;
    for mechanism in MECHANISMS {
        let props = kafka.sasl("SASL_PLAINTEXT", mechanism, "alice", "alice-secret");
        produce_fetch_round_trip(&props.client(&kafka.sasl_plaintext), 10).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_are_named_refusals() {
    let kafka = Kafka::shared().await;
    for protocol in ["SASL_PLAINTEXT", "SASL_SSL"] {
        let addr = if protocol == "SASL_SSL" {
            &kafka.sasl_ssl
        } else {
            &kafka.sasl_plaintext
        };
        for mechanism in MECHANISMS {
            for (user, password) in [("alice", "wrong-secret"), ("mallory", "alice-secret")] {
                let what = format!("{protocol} {mechanism} {user}/{password}");
                let props = kafka.sasl(protocol, mechanism, user, password);
                let e = refused(&what, connect(addr, &props.refs())).await;
                let Error::Authentication {
                    mechanism: m,
                    detail,
                } = &e
                else {
                    panic!("{what}: not an authentication error: {e}")
                };
                assert_eq!(m, mechanism, "{what}");
                // Kafka's own words: "Authentication failed: Invalid username or password"
                // (PLAIN), "... due to invalid credentials with SASL mechanism ..." (SCRAM).
                assert!(detail.contains("Authentication failed"), "{what}: {e}");
                assert!(!e.is_retriable() && e.is_refusal(), "{what}");
                // Through a client: one attempt, not a retry loop until the deadline.
                let client = props.client(addr);
                let e = refused(&what, client.refresh_metadata(&[])).await;
                assert!(matches!(e, Error::Authentication { .. }), "{what}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_verifies_the_server_and_round_trips() {
    let kafka = Kafka::shared().await;
    let props = kafka.ssl_props(false);
    produce_fetch_round_trip(&props.client(&kafka.ssl), 20).await;
    // The DNS name in the certificate works as well as the IP address.
    let port = kafka.ssl.rsplit_once(':').unwrap().1;
    connect(&format!("localhost:{port}"), &props.refs())
        .await
        .expect("localhost is in the certificate");
    // PLAINTEXT against the TLS listener fails, and does not hang.
    refused("plaintext to SSL", connect(&kafka.ssl, &[])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_the_client_certificate_round_trips() {
    let kafka = Kafka::shared().await;
    // ssl.client.auth=requested: the broker asks for our certificate and verifies it (the
    // authorization test shows it becomes the principal User:CN=alice).
    let props = kafka.ssl_props(true);
    produce_fetch_round_trip(&props.client(&kafka.ssl), 10).await;
}

/// A throwaway CA (PEM file) that signed nothing the broker has.
struct StrangerCa(PathBuf);

impl StrangerCa {
    fn new() -> StrangerCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "a CA the broker never heard of");
        let key = KeyPair::generate().unwrap();
        let file = std::env::temp_dir().join(format!("{}.pem", unique("stranger-ca")));
        std::fs::write(&file, params.self_signed(&key).unwrap().pem()).unwrap();
        StrangerCa(file)
    }
}

impl Drop for StrangerCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_ca_is_a_named_tls_refusal() {
    let kafka = Kafka::shared().await;
    let stranger = StrangerCa::new();
    for (addr, base) in [
        (&kafka.ssl, kafka.ssl_props(false)),
        (
            &kafka.sasl_ssl,
            kafka.sasl("SASL_SSL", "SCRAM-SHA-512", "alice", "alice-secret"),
        ),
    ] {
        let props = base.with("ssl.ca.location", path(&stranger.0));
        let e = refused("untrusted CA", connect(addr, &props.refs())).await;
        assert!(matches!(e, Error::Tls { .. }), "{e}");
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
        assert!(!e.is_retriable() && e.is_refusal());
        let e = refused("untrusted CA", props.client(addr).refresh_metadata(&[])).await;
        assert!(matches!(e, Error::Tls { .. }), "{e}");
    }
}

/// The listeners bind 127.0.0.1 only, so another loopback address cannot reach them; the
/// IPv4-mapped IPv6 form of 127.0.0.1 does, and it is an IP address the certificate does not
/// name (its SAN holds the IPv4 address and `localhost`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_missing_from_the_certificate() {
    let kafka = Kafka::shared().await;
    let port = kafka.ssl.rsplit_once(':').unwrap().1;
    let unnamed = format!("[::ffff:127.0.0.1]:{port}");
    let props = kafka.ssl_props(false);
    let e = refused(
        "name not in the certificate",
        connect(&unnamed, &props.refs()),
    )
    .await;
    assert!(matches!(e, Error::Tls { .. }), "{e}");
    assert!(e.to_string().contains("not valid for name"), "{e}");
    assert!(!e.is_retriable());

    // Explicitly `https` is the same; `none` (or Java's empty value) skips only the name
    // check, the CA must still have signed it.
    let https = props
        .clone()
        .with("ssl.endpoint.identification.algorithm", "https");
    assert!(matches!(
        connect(&unnamed, &https.refs()).await,
        Err(Error::Tls { .. })
    ));
    for off in ["none", ""] {
        let lenient = props
            .clone()
            .with("ssl.endpoint.identification.algorithm", off);
        connect(&unnamed, &lenient.refs())
            .await
            .unwrap_or_else(|e| panic!("identification '{off}': {e}"));
        lenient
            .client(&unnamed)
            .refresh_metadata(&[])
            .await
            .expect("metadata with the name check off");
    }
    let stranger = StrangerCa::new();
    let e = connect(
        &unnamed,
        &props
            .with("ssl.endpoint.identification.algorithm", "none")
            .with("ssl.ca.location", path(&stranger.0))
            .refs(),
    )
    .await
    .err()
    .expect("an untrusted CA even without the name check");
    assert!(matches!(e, Error::Tls { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_plain_and_scram_round_trip() {
    let kafka = Kafka::shared().await;
    for mechanism in MECHANISMS {
        let props = kafka.sasl("SASL_SSL", mechanism, "alice", "alice-secret");
        produce_fetch_round_trip(&props.client(&kafka.sasl_ssl), 20).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Our consumer over SASL_SSL

fn consumer(bootstrap: &str, group: &str, props: &Props) -> Consumer {
    let mut config = ConsumerConfig::new(bootstrap, group);
    for (k, v) in props.refs() {
        config.set(k, v).unwrap();
    }
    config.set("auto.offset.reset", "earliest").unwrap();
    config.set("heartbeat.interval.ms", "500").unwrap();
    Consumer::new(config, Box::new(NoopListener)).expect("consumer")
}

/// Poll until `n` records arrived (fails after a minute).
async fn consume(consumer: &mut Consumer, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {n}: {:?}",
            got.len(),
            consumer.identity()
        );
        for r in consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll")
        {
            got.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_over_sasl_ssl_scram_and_nothing_after_a_wrong_password() {
    let kafka = Kafka::shared().await;
    let plain = Client::new(ClientConfig::new(&kafka.broker.bootstrap)).unwrap();
    let topic = unique("secure-group");
    plain.create_topic(&topic, 2, 1).await.unwrap();
    produce(&plain, &topic, 30).await;

    let good = kafka.sasl("SASL_SSL", "SCRAM-SHA-512", "alice", "alice-secret");
    let group = unique("secure-g");
    let mut c = consumer(&kafka.sasl_ssl, &group, &good);
    c.subscribe(&[topic.as_str()]);
    let mut got = consume(&mut c, 30).await;
    got.sort_by_key(|v| v[1..].parse::<u32>().unwrap());
    assert_eq!(got, (0..30).map(|i| format!("v{i}")).collect::<Vec<_>>());
    c.commit().await.expect("commit over SASL_SSL");
    let committed = plain.offset_fetch(&group, None).await.unwrap();
    assert_eq!(committed.values().sum::<i64>(), 30, "{committed:?}");
    c.close(Duration::from_secs(10)).await.unwrap();

    // The same consumer with a wrong password: poll fails at once, naming the login, and the
    // group sees nothing of it.
    let bad_group = unique("secure-bad-g");
    let bad = kafka.sasl("SASL_SSL", "SCRAM-SHA-512", "alice", "wrong-secret");
    let mut c = consumer(&kafka.sasl_ssl, &bad_group, &bad);
    c.subscribe(&[topic.as_str()]);
    let started = Instant::now();
    let e = loop {
        match c.poll(Duration::from_millis(200)).await {
            Ok(records) => assert!(records.is_empty(), "consumed with a wrong password"),
            Err(e) => break e,
        }
        assert!(started.elapsed() < PROMPT, "no error after {PROMPT:?}");
    };
    let text = e.to_string();
    assert!(
        text.contains("SASL SCRAM-SHA-512 authentication failed"),
        "{text}"
    );
    assert!(c.assignment().is_empty());
    // It stays refused (no silent retry) and nothing was committed for the group.
    assert!(c.poll(Duration::from_millis(100)).await.is_err());
    let committed = plain.offset_fetch(&bad_group, None).await.unwrap();
    assert!(committed.is_empty(), "{committed:?}");
}

// ---------------------------------------------------------------------------------------------
// The agent's Kafka connection

/// The agent's configuration from its variables, plus `LAGBALANCE_BOOTSTRAP`/`_GROUP`.
fn agent_config(bootstrap: &str, group: &str, vars: &[(&str, &str)]) -> AgentConfig {
    let mut env: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("LAGBALANCE_BOOTSTRAP".into(), bootstrap.into());
    env.insert("LAGBALANCE_GROUP".into(), group.into());
    AgentConfig::from_sources(&env, &[]).expect("agent config")
}

/// One agent poll of `group` (measuring `topic`) with the agent's own client.
async fn agent_snapshot(cfg: &AgentConfig, topic: &str) -> anyhow::Result<Snapshot> {
    let client = poll::client(&cfg.bootstrap, Duration::from_secs(10), &cfg.security)?;
    poll::snapshot(&client, &cfg.group, 0, &[topic.to_owned()]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_polls_over_sasl_ssl_and_is_refused_with_a_wrong_password() {
    let kafka = Kafka::shared().await;
    let plain = Client::new(ClientConfig::new(&kafka.broker.bootstrap)).unwrap();
    let topic = unique("agent-secure");
    let group = unique("agent-secure-g");
    plain.create_topic(&topic, 1, 1).await.unwrap();
    produce(&plain, &topic, 10).await;
    // A live member (the agent measures groups with members) that consumed and committed all.
    let mut member = consumer(&kafka.broker.bootstrap, &group, &Props(Vec::new()));
    member.subscribe(&[topic.as_str()]);
    consume(&mut member, 10).await;
    member.commit().await.unwrap();
    produce(&plain, &topic, 5).await;

    let ca = kafka.file("ca.pem");
    let vars = |password: &'static str| {
        vec![
            ("LAGBALANCE_SECURITY_PROTOCOL", "SASL_SSL"),
            ("LAGBALANCE_SSL_CA_LOCATION", ca.as_str()),
            ("LAGBALANCE_SASL_MECHANISM", "SCRAM-SHA-256"),
            ("LAGBALANCE_SASL_USERNAME", "alice"),
            ("LAGBALANCE_SASL_PASSWORD", password),
        ]
    };
    let cfg = agent_config(&kafka.sasl_ssl, &group, &vars("alice-secret"));
    let snap = agent_snapshot(&cfg, &topic).await.expect("agent poll");
    assert_eq!(
        snap.committed.get(&(topic.clone(), 0)),
        Some(&10),
        "{snap:?}"
    );
    assert_eq!(snap.log_end.get(&(topic.clone(), 0)), Some(&15), "{snap:?}");
    assert_eq!(snap.members.len(), 1, "{snap:?}");

    let cfg = agent_config(&kafka.sasl_ssl, &group, &vars("wrong-secret"));
    let started = Instant::now();
    let e = agent_snapshot(&cfg, &topic)
        .await
        .expect_err("wrong password");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    assert!(
        format!("{e:#}").contains("SASL SCRAM-SHA-256 authentication failed"),
        "{e:#}"
    );
    assert!(!format!("{e:#}").contains("wrong-secret"), "{e:#}");
    member.close(Duration::from_secs(10)).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Authorization (StandardAuthorizer)

/// Kafka's codes for the ACL fields (`org.apache.kafka.common.resource.ResourceType`,
/// `PatternType`, `acl.AclOperation`, `acl.AclPermissionType`).
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const LITERAL: i8 = 3;
const READ: i8 = 3;
const WRITE: i8 = 4;
const DESCRIBE: i8 = 8;
const ALLOW: i8 = 3;

/// Grant `User:principal` `operation` on a resource, as admin (CreateAcls, the codec of
/// `kafka-protocol`; our admin client has no CreateAcls).
async fn grant(admin: &Client, principal: &str, resource: (i8, &str), operation: i8) {
    let conn = admin.any_broker().await.expect("admin connection");
    // Our version table leaves out APIs the library never sends; Kafka 4.x speaks v2–v3.
    let version = 3;
    let req = CreateAclsRequest::default().with_creations(vec![AclCreation::default()
        .with_resource_type(resource.0)
        .with_resource_name(StrBytes::from_string(resource.1.to_owned()))
        .with_resource_pattern_type(LITERAL)
        .with_principal(StrBytes::from_string(format!("User:{principal}")))
        .with_host(StrBytes::from_static_str("*"))
        .with_operation(operation)
        .with_permission_type(ALLOW)]);
    let resp = conn.send(&req, version).await.expect("CreateAcls");
    for r in resp.results {
        assert_eq!(r.error_code, 0, "CreateAcls: {:?}", r.error_message);
    }
}

fn authorization_code(e: &Error) -> Option<kafka_protocol::ResponseError> {
    e.broker_code().and_then(|c| c.known())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_is_refused_by_name_until_granted_the_minimal_acls() {
    use kafka_protocol::ResponseError::TopicAuthorizationFailed;
    let kafka = Kafka::of(
        TestBroker::start_kafka_with_authorizer()
            .await
            .expect("Kafka with the StandardAuthorizer"),
    );
    let admin_props = kafka.sasl("SASL_PLAINTEXT", "SCRAM-SHA-512", "admin", "admin-secret");
    let admin = admin_props.client(&kafka.sasl_plaintext);
    let topic = unique("acl");
    let group = unique("acl-g");
    admin
        .create_topic(&topic, 1, 1)
        .await
        .expect("admin creates");
    produce(&admin, &topic, 10).await;

    let alice_props = kafka.sasl("SASL_PLAINTEXT", "SCRAM-SHA-512", "alice", "alice-secret");
    let alice = alice_props.client(&kafka.sasl_plaintext);

    // Produce: TOPIC_AUTHORIZATION_FAILED naming the topic, at once.
    let producer = Producer::new(alice.clone(), ProducerConfig::default()).unwrap();
    let e = refused(
        "produce without ACLs",
        producer.send(ProducerRecord::new(&topic).value("x")),
    )
    .await;
    assert_eq!(
        authorization_code(&e),
        Some(TopicAuthorizationFailed),
        "{e}"
    );
    assert!(e.to_string().contains(&topic), "{e}");
    assert!(!e.is_retriable() && e.is_refusal());

    // Fetch: the same.
    let mut fetcher = Fetcher::new(
        alice.clone(),
        FetchConfig {
            auto_offset_reset: OffsetReset::Earliest,
            ..Default::default()
        },
    );
    fetcher.assign(&topic, 0, None);
    let e = refused("fetch without ACLs", fetcher.fetch()).await;
    assert_eq!(
        authorization_code(&e),
        Some(TopicAuthorizationFailed),
        "{e}"
    );
    assert!(e.to_string().contains(&topic), "{e}");

    // Consumer: joining the group is refused with GROUP_AUTHORIZATION_FAILED naming it.
    let mut c = consumer(&kafka.sasl_plaintext, &group, &alice_props);
    c.subscribe(&[topic.as_str()]);
    let started = Instant::now();
    let e = loop {
        match c.poll(Duration::from_millis(200)).await {
            Ok(records) => assert!(records.is_empty()),
            Err(e) => break e,
        }
        assert!(started.elapsed() < PROMPT, "no error after {PROMPT:?}");
    };
    let text = e.to_string();
    assert!(text.contains("GroupAuthorizationFailed"), "{text}");
    assert!(text.contains(&group), "{text}");
    drop(c);

    // mTLS: the client certificate is the principal User:CN=alice (no ACLs: refused); without
    // one the SSL listener's principal is ANONYMOUS, a super user here.
    let e = refused(
        "CN=alice without ACLs",
        kafka
            .ssl_props(true)
            .client(&kafka.ssl)
            .refresh_metadata(std::slice::from_ref(&topic)),
    )
    .await;
    assert_eq!(
        authorization_code(&e),
        Some(TopicAuthorizationFailed),
        "{e}"
    );
    kafka
        .ssl_props(false)
        .client(&kafka.ssl)
        .refresh_metadata(std::slice::from_ref(&topic))
        .await
        .expect("ANONYMOUS is a super user on this broker");

    // The minimal ACLs of docs/security.md: a consumer needs Read on the topic and on the
    // group (Read implies Describe); a producer needs Write on the topic.
    grant(&admin, "alice", (TOPIC, &topic), READ).await;
    grant(&admin, "alice", (GROUP, &group), READ).await;
    grant(&admin, "alice", (TOPIC, &topic), WRITE).await;
    // ACLs reach the authorizer through the metadata log: wait until alice may describe.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = alice.refresh_metadata(std::slice::from_ref(&topic)).await {
        assert!(Instant::now() < deadline, "ACLs never took effect: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce(&alice, &topic, 5).await;
    let mut c = consumer(&kafka.sasl_plaintext, &group, &alice_props);
    c.subscribe(&[topic.as_str()]);
    let got = consume(&mut c, 15).await;
    assert_eq!(got.len(), 15, "{got:?}");
    c.commit().await.expect("commit with Read on the group");
    let committed = admin.offset_fetch(&group, None).await.unwrap();
    assert_eq!(committed.values().sum::<i64>(), 15, "{committed:?}");

    // The agent, as the mTLS principal User:CN=alice, watching alice's group (the consumer
    // stays in it: the agent measures groups with members): refused by name without ACLs,
    // and its documented minimum (Describe on the group and on the topic) is enough to poll.
    let ca = kafka.file("ca.pem");
    let (cert, key) = (kafka.file("client.pem"), kafka.file("client.key"));
    let cfg = agent_config(
        &kafka.ssl,
        &group,
        &[
            ("LAGBALANCE_SECURITY_PROTOCOL", "SSL"),
            ("LAGBALANCE_SSL_CA_LOCATION", &ca),
            ("LAGBALANCE_SSL_CERTIFICATE_LOCATION", &cert),
            ("LAGBALANCE_SSL_KEY_LOCATION", &key),
        ],
    );
    let started = Instant::now();
    let e = agent_snapshot(&cfg, &topic)
        .await
        .expect_err("CN=alice has no ACLs");
    assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
    assert!(format!("{e:#}").contains("AuthorizationFailed"), "{e:#}");
    grant(&admin, "CN=alice", (GROUP, &group), DESCRIBE).await;
    grant(&admin, "CN=alice", (TOPIC, &topic), DESCRIBE).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let snap = loop {
        match agent_snapshot(&cfg, &topic).await {
            Ok(snap) => break snap,
            Err(e) => assert!(Instant::now() < deadline, "ACLs never took effect: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        snap.committed.get(&(topic.clone(), 0)),
        Some(&15),
        "{snap:?}"
    );
    assert_eq!(snap.log_end.get(&(topic.clone(), 0)), Some(&15), "{snap:?}");
    assert_eq!(snap.members.len(), 1, "{snap:?}");
    c.close(Duration::from_secs(10)).await.unwrap();
}
