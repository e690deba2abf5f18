//! The library call: `verify` on a store, for intact, tampered, forged, truncated-in-the-middle,
//! unreadable and empty logs, with pages of every size.

use custodian_domain::{ChainBreak, EventHash};
use custodian_replay::{BreakReason, Source, VerifyReport, verify, verify_in_pages};
use custodian_store::Head;
use custodian_testkit::Ledger;

use crate::support::Log as _;

custodian_testkit::on_every_backend!(
    an_intact_log_verifies_to_the_stored_head,
    page_size_does_not_change_the_result,
    changed_data_is_found_at_its_position,
    a_rehashed_forgery_breaks_the_next_link,
    a_deleted_event_is_a_gap_at_its_position,
    an_unreadable_row_is_a_break_at_its_position,
    the_first_break_wins_over_a_later_unreadable_row,
    a_gap_just_before_an_unreadable_row_is_the_first_break,
    an_empty_log_verifies_with_zero_events,
);

/// The stored hash of every event, in position order: the Merkle tree's leaf data.
pub async fn hashes(fixture: &Ledger) -> Vec<[u8; 32]> {
    let store = fixture.open_read_only().await;
    let records = store.read_all(1, usize::MAX).await.unwrap();
    store.close().await;
    records.iter().map(|r| r.hash.0).collect()
}

/// `report` is a verification of `events` events up to `head`, whose Merkle root is the RFC 6962
/// root of `leaves`.
fn assert_verified(report: &VerifyReport, events: u64, head: Head, leaves: &[[u8; 32]]) {
    let VerifyReport::Verified {
        events: e,
        head: h,
        root,
        checkpoint: None,
        ..
    } = report
    else {
        panic!("not verified: {report:?}");
    };
    assert_eq!((*e, *h), (events, head));
    assert_eq!(*root, custodian_domain::merkle::root_of(leaves));
}

const PAGE_SIZES: [usize; 7] = [1, 2, 7, 136, 299, 300, 1000];

async fn report(fixture: &Ledger, page_size: usize) -> VerifyReport {
    let mut source = Source::from_store(&fixture.location, fixture.open_read_only().await);
    let report = verify_in_pages(&mut source, page_size, None, |_| {})
        .await
        .unwrap();
    source.close().await;
    report
}

async fn an_intact_log_verifies_to_the_stored_head(fixture: Ledger) {
    fixture.populate(300).await;
    let store = fixture.open_read_only().await;
    let head = store.head().await.unwrap();
    assert_eq!(head.position, 300);

    let mut seen = Vec::new();
    let mut source = Source::from_store(&fixture.location, store.clone());
    let report = verify(&mut source, |n| seen.push(n)).await.unwrap();
    assert_verified(&report, 300, head, &hashes(&fixture).await);
    assert_eq!(seen.last(), Some(&300));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");

    let mut seen = Vec::new();
    let report = verify_in_pages(&mut source, 64, None, |n| seen.push(n))
        .await
        .unwrap();
    assert_verified(&report, 300, head, &hashes(&fixture).await);
    assert_eq!(seen, [64, 128, 192, 256, 300]);
}

async fn page_size_does_not_change_the_result(fixture: Ledger) {
    fixture.populate(300).await;
    let expected = report(&fixture, 1000).await;
    assert!(expected.is_verified());
    for page_size in PAGE_SIZES.into_iter().chain([0, 301]) {
        assert_eq!(report(&fixture, page_size).await, expected, "{page_size}");
    }
}

async fn changed_data_is_found_at_its_position(fixture: Ledger) {
    fixture.populate(300).await;
    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.flip_one_data_byte(137).await;
    db.close().await;

    for page_size in PAGE_SIZES {
        let report = report(&fixture, page_size).await;
        assert!(
            matches!(
                report,
                VerifyReport::Broken {
                    position: 137,
                    reason: BreakReason::Chain(ChainBreak::HashMismatch { position: 137, .. })
                }
            ),
            "page size {page_size}: {report:?}"
        );
    }
}

async fn a_rehashed_forgery_breaks_the_next_link(fixture: Ledger) {
    fixture.populate(300).await;
    let store = fixture.open_read_only().await;
    let original = store.read_all(137, 1).await.unwrap().remove(0).hash;
    store.close().await;

    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.flip_one_data_byte(137).await;
    let forged = db.rehash(&fixture, 137).await;
    db.close().await;

    for page_size in PAGE_SIZES {
        assert_eq!(
            report(&fixture, page_size).await,
            VerifyReport::Broken {
                position: 138,
                reason: BreakReason::Chain(ChainBreak::PrevHashMismatch {
                    position: 138,
                    expected: forged,
                    found: original,
                }),
            },
            "page size {page_size}"
        );
    }
}

async fn a_deleted_event_is_a_gap_at_its_position(fixture: Ledger) {
    fixture.populate(300).await;
    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.delete(137).await;
    db.close().await;

    for page_size in PAGE_SIZES {
        assert_eq!(
            report(&fixture, page_size).await,
            VerifyReport::Broken {
                position: 137,
                reason: BreakReason::Chain(ChainBreak::Gap {
                    expected: 137,
                    found: 138
                }),
            },
            "page size {page_size}"
        );
    }
}

async fn an_unreadable_row_is_a_break_at_its_position(fixture: Ledger) {
    fixture.populate(300).await;
    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.set_data(50, "{\"i\": 49, \"name\": ").await;
    db.close().await;

    for page_size in PAGE_SIZES {
        let report = report(&fixture, page_size).await;
        assert!(
            matches!(
                &report,
                VerifyReport::Broken {
                    position: 50,
                    reason: BreakReason::Unreadable(reason),
                } if reason.contains("not valid JSON")
            ),
            "page size {page_size}: {report:?}"
        );
    }
}

async fn the_first_break_wins_over_a_later_unreadable_row(fixture: Ledger) {
    // The store refuses a page with an unreadable row whole; the rows before it must still be
    // checked, or the tampering at 137 would hide behind the corruption at 200.
    fixture.populate(300).await;
    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.flip_one_data_byte(137).await;
    db.set_data(200, "not json").await;
    db.close().await;

    for page_size in PAGE_SIZES {
        let report = report(&fixture, page_size).await;
        assert!(
            matches!(
                report,
                VerifyReport::Broken {
                    position: 137,
                    reason: BreakReason::Chain(ChainBreak::HashMismatch { .. })
                }
            ),
            "page size {page_size}: {report:?}"
        );
    }
}

async fn a_gap_just_before_an_unreadable_row_is_the_first_break(fixture: Ledger) {
    fixture.populate(300).await;
    let mut db = fixture.connect().await;
    db.drop_append_only_triggers().await;
    db.delete(100).await;
    db.set_data(101, "not json").await;
    db.close().await;

    for page_size in PAGE_SIZES {
        assert_eq!(
            report(&fixture, page_size).await,
            VerifyReport::Broken {
                position: 100,
                reason: BreakReason::Chain(ChainBreak::Gap {
                    expected: 100,
                    found: 101
                }),
            },
            "page size {page_size}"
        );
    }
}

async fn an_empty_log_verifies_with_zero_events(fixture: Ledger) {
    fixture.populate(0).await;
    let mut source = Source::from_store(&fixture.location, fixture.open_read_only().await);
    let report = verify(&mut source, |_| {}).await.unwrap();
    let head = Head {
        position: 0,
        hash: EventHash::ZERO,
    };
    assert_verified(&report, 0, head, &[]);
    assert!(
        report
            .to_string()
            .starts_with("verified: 0 events, the log is empty\nmerkle root e3b0c442"),
        "{report}"
    );
}
