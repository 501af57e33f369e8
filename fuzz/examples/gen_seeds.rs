//! Writes the committed seed corpora under `fuzz/seeds/<target>/` from real encodings:
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds` (rewrites them in place).
//! Kept small on purpose: libFuzzer grows the working corpus (`fuzz/corpus/`, not committed).

use std::fs;
use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, HeaderVersion, Request, StrBytes};
use lagbalance::group::codec::{encode_assignment, encode_subscription};
use lagbalance::group::{Assignment, Subscription};
use lagbalance::records::{encode_batch, CompressionCodec, ProducerRecord};
use lagbalance::security::scram::ScramHash;
use lagbalance::wire::versions::client_range;
use lagbalance_assign::model::{MemberStats, PartitionLoad};
use lagbalance_assign::userdata::MemberUserData;
use lagbalance_fuzz::scram::{server_signature, NONCE, USER};
use lagbalance_fuzz::{selector, CLIENT_APIS};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

fn user_data(partitions: i32) -> Bytes {
    let stats = MemberStats {
        processed_rate: 850.0,
        backlogged: true,
        cpu_used_cores: Some(0.5),
        cpu_limit_cores: Some(2.0),
        busy_fraction: Some(0.9),
        partitions: (0..partitions)
            .map(|p| PartitionLoad {
                topic: if p % 2 == 0 { "orders" } else { "audit" }.to_string(),
                partition: p,
                lag: 120.0,
                rate: 40.0,
            })
            .collect(),
        measured_at_ms: 60_000,
    };
    MemberUserData::from_stats(&stats, Some(900.0), 7).encode()
}

fn subscription() -> Subscription {
    Subscription {
        topics: vec!["orders".into(), "audit".into()],
        user_data: Some(user_data(3)),
        owned: vec![
            ("orders".into(), 0),
            ("orders".into(), 2),
            ("audit".into(), 1),
        ],
        generation: 4,
        rack: Some("rack-a".into()),
    }
}

fn assignment() -> Assignment {
    Assignment {
        partitions: vec![
            ("orders".into(), 0),
            ("orders".into(), 2),
            ("audit".into(), 1),
        ],
        user_data: None,
    }
}

fn batch(codec: CompressionCodec) -> Bytes {
    let mut r = ProducerRecord::new("orders").key("k1").value("value one");
    r.headers = vec![
        ("h".into(), Some(Bytes::from_static(b"v"))),
        ("n".into(), None),
    ];
    let records = vec![
        r,
        ProducerRecord::new("orders").value("value two"),
        ProducerRecord::new("orders"),
    ];
    encode_batch(&records, 1_700_000_000_000, codec).unwrap()
}

/// `[selector, frame]` where the frame is the correlation id, header and body.
fn response<R: Request>(version: i16, body: &R::Response) -> Vec<u8> {
    let api = ApiKey::try_from(R::KEY).unwrap();
    let mut buf = BytesMut::new();
    buf.put_slice(&lagbalance_fuzz::selector(api, version));
    ResponseHeader::default()
        .with_correlation_id(7)
        .encode(&mut buf, R::Response::header_version(version))
        .unwrap();
    body.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("{api:?} v{version}: {e}"));
    buf.to_vec()
}

fn defaults<R: Request>()
where
    R::Response: Default,
{
    let api = ApiKey::try_from(R::KEY).unwrap();
    let (lo, hi) = client_range(api).unwrap();
    for v in [lo, hi] {
        write(
            "response",
            &format!("{api:?}-v{v}-default"),
            &response::<R>(v, &R::Response::default()),
        );
    }
}

fn main() {
    // Subscriptions: ours at v3, and older layouts written by kafka-protocol directly.
    write(
        "subscription",
        "v3",
        &encode_subscription(&subscription()).unwrap(),
    );
    write(
        "subscription",
        "v3-minimal",
        &encode_subscription(&Subscription {
            generation: -1,
            ..Default::default()
        })
        .unwrap(),
    );
    for v in 0..3i16 {
        let body = ConsumerProtocolSubscription::default()
            .with_topics(vec![s("orders")])
            .with_user_data(Some(Bytes::from_static(b"ud")));
        let body = if v >= 1 {
            body.with_owned_partitions(vec![
                consumer_protocol_subscription::TopicPartition::default()
                    .with_topic(TopicName(s("orders")))
                    .with_partitions(vec![0, 1]),
            ])
        } else {
            body
        };
        let body = if v >= 2 {
            body.with_generation_id(3)
        } else {
            body
        };
        let mut buf = BytesMut::new();
        buf.put_i16(v);
        body.encode(&mut buf, v).unwrap();
        write("subscription", &format!("v{v}"), &buf);
    }

    write(
        "assignment",
        "v3",
        &encode_assignment(&assignment()).unwrap(),
    );
    write(
        "assignment",
        "v3-user-data",
        &encode_assignment(&Assignment {
            user_data: Some(Bytes::from_static(b"x")),
            ..assignment()
        })
        .unwrap(),
    );
    let mut v0 = BytesMut::new();
    v0.put_i16(0);
    ConsumerProtocolAssignment::default()
        .with_assigned_partitions(vec![consumer_protocol_assignment::TopicPartition::default(
        )
        .with_topic(TopicName(s("orders")))
        .with_partitions(vec![5])])
        .encode(&mut v0, 0)
        .unwrap();
    write("assignment", "v0", &v0);

    write("userdata", "v1", &user_data(3));
    write("userdata", "v1-empty", &MemberUserData::default().encode());
    write(
        "userdata",
        "v0",
        &MemberUserData::decode(&user_data(0))
            .unwrap()
            .encode_version(0),
    );

    for (name, codec) in [
        ("none", CompressionCodec::None),
        ("gzip", CompressionCodec::Gzip),
        ("snappy", CompressionCodec::Snappy),
        ("lz4", CompressionCodec::Lz4),
        ("zstd", CompressionCodec::Zstd),
    ] {
        let mut input = vec![1u8];
        input.extend_from_slice(&batch(codec));
        write("records", name, &input);
    }
    let mut two = vec![0u8];
    two.extend_from_slice(&batch(CompressionCodec::None));
    two.extend_from_slice(&batch(CompressionCodec::None));
    two.truncate(two.len() - 5); // the broker may cut the last batch
    write("records", "two-truncated", &two);

    // Responses: the default body at the lowest and highest version the client uses...
    defaults::<ApiVersionsRequest>();
    defaults::<MetadataRequest>();
    defaults::<ProduceRequest>();
    defaults::<FetchRequest>();
    defaults::<ListOffsetsRequest>();
    defaults::<OffsetCommitRequest>();
    defaults::<OffsetFetchRequest>();
    defaults::<FindCoordinatorRequest>();
    defaults::<JoinGroupRequest>();
    defaults::<SyncGroupRequest>();
    defaults::<HeartbeatRequest>();
    defaults::<LeaveGroupRequest>();
    defaults::<DescribeGroupsRequest>();
    defaults::<ListGroupsRequest>();
    defaults::<CreateTopicsRequest>();
    defaults::<DeleteTopicsRequest>();
    defaults::<SaslHandshakeRequest>();
    defaults::<SaslAuthenticateRequest>();
    defaults::<InitProducerIdRequest>();
    assert_eq!(
        CLIENT_APIS.len(),
        19,
        "every client API has its default seeds above"
    );

    // ...and populated bodies for the paths that carry the most structure.
    let api_versions = ApiVersionsResponse::default().with_api_keys(
        CLIENT_APIS
            .iter()
            .map(|&a| {
                let (lo, hi) = client_range(a).unwrap();
                api_versions_response::ApiVersion::default()
                    .with_api_key(a as i16)
                    .with_min_version(lo)
                    .with_max_version(hi)
            })
            .collect(),
    );
    for v in [0, 3] {
        write(
            "response",
            &format!("ApiVersions-v{v}-full"),
            &response::<ApiVersionsRequest>(v, &api_versions),
        );
    }
    let mut unsupported = selector(ApiKey::ApiVersions, 3).to_vec();
    unsupported.extend_from_slice(&[0, 0, 0, 7, 0, 35]);
    write("response", "ApiVersions-v3-unsupported", &unsupported);

    let metadata = MetadataResponse::default()
        .with_brokers(vec![metadata_response::MetadataResponseBroker::default()
            .with_node_id(BrokerId(1))
            .with_host(s("127.0.0.1"))
            .with_port(9092)])
        .with_controller_id(BrokerId(1))
        .with_topics(vec![metadata_response::MetadataResponseTopic::default()
            .with_name(Some(TopicName(s("orders"))))
            .with_partitions(
                (0..2)
                    .map(|p| {
                        metadata_response::MetadataResponsePartition::default()
                            .with_partition_index(p)
                            .with_leader_id(BrokerId(1))
                            .with_replica_nodes(vec![BrokerId(1)])
                            .with_isr_nodes(vec![BrokerId(1)])
                    })
                    .collect(),
            )]);
    for v in [1, 12] {
        write(
            "response",
            &format!("Metadata-v{v}-full"),
            &response::<MetadataRequest>(v, &metadata),
        );
    }

    let fetch = FetchResponse::default().with_responses(vec![
        fetch_response::FetchableTopicResponse::default()
            .with_topic(TopicName(s("orders")))
            .with_partitions(vec![fetch_response::PartitionData::default()
                .with_partition_index(0)
                .with_high_watermark(3)
                .with_records(Some(batch(CompressionCodec::None)))]),
    ]);
    for v in [4, 11] {
        write(
            "response",
            &format!("Fetch-v{v}-records"),
            &response::<FetchRequest>(v, &fetch),
        );
    }

    let sub = encode_subscription(&subscription()).unwrap();
    let join = JoinGroupResponse::default()
        .with_generation_id(5)
        .with_protocol_name(Some(s("lagbalance")))
        .with_leader(s("m-1"))
        .with_member_id(s("m-1"))
        .with_members(vec![join_group_response::JoinGroupResponseMember::default(
        )
        .with_member_id(s("m-1"))
        .with_metadata(sub.clone())]);
    write(
        "response",
        "JoinGroup-v5-leader",
        &response::<JoinGroupRequest>(5, &join),
    );

    let sync =
        SyncGroupResponse::default().with_assignment(encode_assignment(&assignment()).unwrap());
    write(
        "response",
        "SyncGroup-v3-assignment",
        &response::<SyncGroupRequest>(3, &sync),
    );

    let describe = DescribeGroupsResponse::default().with_groups(vec![
        describe_groups_response::DescribedGroup::default()
            .with_group_id(GroupId(s("g")))
            .with_group_state(s("Stable"))
            .with_protocol_type(s("consumer"))
            .with_protocol_data(s("lagbalance"))
            .with_members(vec![
                describe_groups_response::DescribedGroupMember::default()
                    .with_member_id(s("m-1"))
                    .with_client_id(s("c"))
                    .with_client_host(s("/127.0.0.1"))
                    .with_member_metadata(sub)
                    .with_member_assignment(encode_assignment(&assignment()).unwrap()),
            ]),
    ]);
    write(
        "response",
        "DescribeGroups-v5-member",
        &response::<DescribeGroupsRequest>(5, &describe),
    );

    let offsets = OffsetFetchResponse::default().with_topics(vec![
        offset_fetch_response::OffsetFetchResponseTopic::default()
            .with_name(TopicName(s("orders")))
            .with_partitions(vec![
                offset_fetch_response::OffsetFetchResponsePartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(42),
            ]),
    ]);
    write(
        "response",
        "OffsetFetch-v7-partition",
        &response::<OffsetFetchRequest>(7, &offsets),
    );

    let list = ListOffsetsResponse::default().with_topics(vec![
        list_offsets_response::ListOffsetsTopicResponse::default()
            .with_name(TopicName(s("orders")))
            .with_partitions(vec![
                list_offsets_response::ListOffsetsPartitionResponse::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)
                    .with_offset(42),
            ]),
    ]);
    write(
        "response",
        "ListOffsets-v7-partition",
        &response::<ListOffsetsRequest>(7, &list),
    );

    scram_seeds();
}

/// A complete SCRAM exchange per hash (`[selector, server-first, 0, server-final]`) with the
/// right server signature, and one whose server refuses the proof.
fn scram_seeds() {
    let salt = b"fuzz-salt";
    for (selector, hash, name) in [
        (0u8, ScramHash::Sha256, "sha256"),
        (1, ScramHash::Sha512, "sha512"),
    ] {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let first = format!("r={NONCE}server,s={},i=4096", b64.encode(salt));
        let auth = format!("n={USER},r={NONCE},{first},c=biws,r={NONCE}server");
        let signature = server_signature(hash, salt, 4096, &auth);
        let mut seed = vec![selector];
        seed.extend_from_slice(first.as_bytes());
        seed.push(0);
        let mut refused = seed.clone();
        seed.extend_from_slice(format!("v={}", b64.encode(signature)).as_bytes());
        refused.extend_from_slice(b"e=invalid-proof");
        write("scram", name, &seed);
        write("scram", &format!("{name}-refused"), &refused);
    }
}
