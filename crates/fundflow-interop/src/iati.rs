//! IATI 2.03 activity files: one `iati-activities` document from fundflow's flows, built with
//! quick-xml's serde serializer, never by formatting strings.
//!
//! The mapping, chosen as an IATI publisher would, so that every amount stays exact:
//! - **Activities.** One per pledge (a partner's `pledge_id`): identifier
//!   `REF-PARTNER.PLEDGE_ID`. It holds the pledge's allocations as transactions of type **13,
//!   Incoming Pledge**, and the partner's payments against it as type **1, Incoming Funds**.
//!   Type 13 and not 11 (Incoming Commitment): a fundflow pledge is a donor's announced
//!   intention, not a firm written obligation, and IATI 2.03 added type 13 for exactly that. A
//!   payment whose pledge is not among the flows (reversed, or filtered out) still goes into
//!   the activity of that pledge's identifier. Status 2 (implementation) while the pledged
//!   values exceed the paid ones in some currency, else 4 (closed). A payment with no pledge,
//!   an in-kind donation and each parallel funding are activities of their own, identified
//!   `REF-EVENT_ID` (the fundflow event id), status 4.
//! - **Parallel funding** mobilized for a grant is a child activity (`hierarchy="2"`) with a
//!   `related-activity` of type 1 (parent) to each partner's pledge of that id in the file, and
//!   each parent names it back with type 2 (child); parallel funding without a grant, or for a
//!   grant that no pledge in the file has, stays an activity of its own at `hierarchy="1"`. Its
//!   source is the transactions' `provider-org`.
//! - **Transactions.** One per allocation, with its own `recipient-country` (ISO 3166-1
//!   alpha-2) or `recipient-region` (`vocabulary="2"`, UN M49, three digits), so no percentage
//!   is ever needed and no recipient is given at activity level. `value` is the allocation's
//!   exact amount in the flow's currency; `transaction-date` is the day it occurred (never after
//!   the day it was recorded: the domain refuses that) and `value-date` the date of the USD rate
//!   when one was given (the date IATI converts at) and it is not after the day of recording,
//!   else the day it occurred, so that no date is in the future. In-kind transactions have
//!   `disbursement-channel` 4 (aid in kind) and `finance-type` 110; their goods are in the
//!   description and in `fundflow:item` elements, since IATI has no quantity field. USD
//!   equivalents, the rate and its source are in `fundflow:usd-equivalent`, and `fundflow:flow`
//!   names the event's seq and id in the log, so a reader can trace each transaction to the
//!   record behind it. A pledge activity ends with `fundflow:pledge`, its partner and pledge id
//!   unescaped.
//! - **Sectors.** A pledge's sector (a payment's, when the pledge is not in the file; the
//!   event's own for the other activities), when it has one, is the activity's one `sector`,
//!   vocabulary 99 (the reporting organisation's own), without a percentage; transactions
//!   carry none. The description is the pledge's (the event's), or a sentence saying what the
//!   activity is when that is empty.
//! - **Identifiers.** The partner id and pledge id are written with every byte outside
//!   `[A-Za-z0-9._-]`, and `%` itself, as `%XX` (upper-case hex of the UTF-8 bytes; see
//!   [`escape_id`]), so that no identifier holds a space, `/`, `&`, `|` or `?` and distinct ids
//!   stay distinct. A pledge's identifier is `REF-PARTNER.PLEDGE_ID`: partner ids never hold a
//!   `.` and event ids (UUIDs) never do, so the first `.` ends the partner and no two pledges,
//!   nor a pledge and an event, meet in one identifier (were they to, the export would be
//!   refused with [`IatiError::DuplicateIdentifier`], never merged).
//! - A reversed event is left out: an IATI file is a full snapshot of what stands. The output
//!   depends only on the flows (activities ordered by identifier, transactions by date, seq and
//!   allocation index), not on their order nor on a clock: the root carries the checkpoint
//!   (`fundflow:as-of-seq`) instead of a `generated-datetime`.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};

use fundflow_api::{FlowAllocation, FlowItem, FlowStatus};
use fundflow_domain::Scope;
use rust_decimal::Decimal;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime};

/// The namespace of fundflow's extension elements and attributes (prefix `fundflow`).
pub const FUNDFLOW_NS: &str = "https://fundflow.example.invalid/ns/iati-extension/1";

/// The IATI version written.
pub const VERSION: &str = "2.03";

/// The reporting organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// Its IATI organisation identifier (e.g. `XM-DAC-…`, `XI-IATI-…`): every activity's
    /// identifier starts with it and `-`.
    pub ref_: String,
    /// Its IATI OrganisationType code (`80`: academic, training and research, ...).
    pub org_type: String,
    /// Its name.
    pub name: String,
    /// The language of the file's text (`xml:lang`, e.g. `en`).
    pub lang: String,
}

/// A written file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IatiExport {
    /// The document, UTF-8, with its XML declaration.
    pub xml: Vec<u8>,
    /// Activities in it.
    pub activities: usize,
    /// Transactions in it.
    pub transactions: usize,
}

/// Why no file was written.
#[derive(Debug, thiserror::Error)]
pub enum IatiError {
    /// No applied flow: the schema requires at least one activity.
    #[error("no applied flow to publish: an IATI file needs at least one activity")]
    NothingToPublish,
    /// The reporting organisation cannot be written as given.
    #[error("the reporting organisation: {message}")]
    BadPublisher {
        /// What is wrong.
        message: String,
    },
    /// A flow the API returned cannot be written (it names what).
    #[error("flow seq {seq}: {message}")]
    BadFlow {
        /// The flow's seq.
        seq: u64,
        /// What is wrong.
        message: String,
    },
    /// Two different pledges or events would get the same `iati-identifier`.
    #[error("flow seq {seq}: its activity identifier {identifier} is already another's")]
    DuplicateIdentifier {
        /// The identifier.
        identifier: String,
        /// The flow that met it second.
        seq: u64,
    },
    /// The serializer failed.
    #[error("cannot write the XML: {0}")]
    Xml(#[from] quick_xml::SeError),
}

/// IATI TransactionType codes used.
const INCOMING_FUNDS: &str = "1";
const INCOMING_PLEDGE: &str = "13";
/// ActivityStatus codes used.
const IMPLEMENTATION: &str = "2";
const CLOSED: &str = "4";
/// ActivityDateType 2: actual start.
const ACTUAL_START: &str = "2";
/// RelatedActivityType codes.
const PARENT: &str = "1";
const CHILD: &str = "2";
/// OrganisationRole codes.
const FUNDING: &str = "1";
const IMPLEMENTING: &str = "4";
/// DisbursementChannel 4: aid in kind.
const AID_IN_KIND: &str = "4";
/// FinanceType 110: standard grant.
const STANDARD_GRANT: &str = "110";
/// SectorVocabulary 99: the reporting organisation's own.
const OWN_SECTORS: &str = "99";
/// RegionVocabulary 2: UN M49.
const UN_M49: &str = "2";

/// What an activity stands for: its key, from which its identifier is made.
#[derive(Debug, Clone, PartialEq, Eq)]
enum What {
    Pledge { partner: String, pledge_id: String },
    Payment,
    ParallelFunding { grant: String },
    InKind,
}

struct Gathered<'a> {
    what: What,
    flows: Vec<&'a FlowItem>,
}

/// The file of the applied flows among `flows` (in any order), as of `as_of_seq`, published by
/// `publisher`.
pub fn activities(
    flows: &[FlowItem],
    publisher: &Publisher,
    as_of_seq: u64,
) -> Result<IatiExport, IatiError> {
    check_publisher(publisher)?;
    let mut seqs = BTreeSet::new();
    let mut gathered: BTreeMap<String, Gathered<'_>> = BTreeMap::new();
    for flow in flows.iter().filter(|f| f.status == FlowStatus::Applied) {
        check_flow(flow)?;
        if !seqs.insert(flow.seq) {
            return Err(bad(flow, "the flow is given twice".to_owned()));
        }
        let what = match (flow.kind.as_str(), flow.grant.is_empty()) {
            ("pledged", true) => return Err(bad(flow, "a pledge without a pledge id".to_owned())),
            ("pledged" | "paid", false) => What::Pledge {
                partner: flow.partner.clone(),
                pledge_id: flow.grant.clone(),
            },
            ("paid", true) => What::Payment,
            ("parallel_funding", _) => What::ParallelFunding {
                grant: flow.grant.clone(),
            },
            ("in_kind", _) => What::InKind,
            (other, _) => return Err(bad(flow, format!("unknown kind {other:?}"))),
        };
        let identifier = match &what {
            What::Pledge { partner, pledge_id } => format!(
                "{}-{}.{}",
                publisher.ref_,
                escape_id(partner),
                escape_id(pledge_id)
            ),
            _ => format!("{}-{}", publisher.ref_, escape_id(&flow.event_id)),
        };
        match gathered.entry(identifier) {
            Entry::Vacant(entry) => {
                entry.insert(Gathered {
                    what,
                    flows: vec![flow],
                });
            }
            // Only a pledge's activity gathers several flows; any other meeting is a clash.
            Entry::Occupied(mut entry)
                if matches!(what, What::Pledge { .. }) && entry.get().what == what =>
            {
                entry.get_mut().flows.push(flow);
            }
            Entry::Occupied(entry) => {
                return Err(IatiError::DuplicateIdentifier {
                    identifier: entry.key().clone(),
                    seq: flow.seq,
                });
            }
        }
    }
    if gathered.is_empty() {
        return Err(IatiError::NothingToPublish);
    }
    // The pledges in the file by pledge id: the parents of the parallel funding naming it.
    let mut parents: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (id, activity) in &gathered {
        if let What::Pledge { pledge_id, .. } = &activity.what
            && activity.flows.iter().any(|f| f.kind == "pledged")
        {
            parents.entry(pledge_id).or_default().push(id.clone());
        }
    }
    let mut children: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (id, activity) in &gathered {
        if let What::ParallelFunding { grant } = &activity.what {
            for parent in parents.get(grant.as_str()).into_iter().flatten() {
                children.entry(parent).or_default().push(id.clone());
            }
        }
    }
    let mut written = Vec::with_capacity(gathered.len());
    let mut transactions = 0;
    for (id, activity) in &gathered {
        let related: Vec<Related> = match &activity.what {
            What::ParallelFunding { grant } => parents
                .get(grant.as_str())
                .into_iter()
                .flatten()
                .map(|parent| Related {
                    reference: parent.clone(),
                    kind: PARENT,
                })
                .collect(),
            _ => children
                .get(id.as_str())
                .into_iter()
                .flatten()
                .map(|child| Related {
                    reference: child.clone(),
                    kind: CHILD,
                })
                .collect(),
        };
        let activity = activity_element(id, activity, related, publisher)?;
        transactions += activity.transaction.len();
        written.push(activity);
    }
    let document = Document {
        version: VERSION,
        namespace: FUNDFLOW_NS,
        as_of_seq,
        activity: written,
    };
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let mut serializer = quick_xml::se::Serializer::with_root(&mut xml, Some("iati-activities"))?;
    serializer.indent(' ', 2);
    document.serialize(serializer)?;
    xml.push('\n');
    Ok(IatiExport {
        xml: xml.into_bytes(),
        activities: document.activity.len(),
        transactions,
    })
}

/// One part of an IATI identifier: `id` with every byte outside `[A-Za-z0-9._-]` (so also `%`)
/// as `%XX`, upper-case hex, byte by byte of its UTF-8. The result holds none of the characters
/// IATI forbids in identifiers (space, `/`, `&`, `|`, `?`), and distinct ids give distinct
/// results (`a b` gives `a%20b`, `a%20b` gives `a%2520b`).
pub fn escape_id(id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0F)]));
        }
    }
    out
}

fn check_publisher(publisher: &Publisher) -> Result<(), IatiError> {
    let refuse = |message: &str| {
        Err(IatiError::BadPublisher {
            message: message.to_owned(),
        })
    };
    if publisher.ref_.trim().is_empty()
        || publisher
            .ref_
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '&' | '|' | '?'))
    {
        return refuse("its ref must be non-empty, without spaces, /, &, | or ?");
    }
    if publisher.org_type.is_empty() || !publisher.org_type.bytes().all(|b| b.is_ascii_digit()) {
        return refuse("its type must be an OrganisationType code (digits)");
    }
    if publisher.name.trim().is_empty() {
        return refuse("its name must not be empty");
    }
    if publisher.lang.is_empty()
        || !publisher
            .lang
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return refuse("its language must be a language code such as en");
    }
    Ok(())
}

fn bad(flow: &FlowItem, message: String) -> IatiError {
    IatiError::BadFlow {
        seq: flow.seq,
        message,
    }
}

fn parse_date(text: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    (text.len() == 10)
        .then(|| Date::parse(text, format).ok())
        .flatten()
}

/// What the schema would refuse (dates, decimals) or the file could not say (a recipient
/// outside the reference data), caught here with the flow that holds it.
fn check_flow(flow: &FlowItem) -> Result<(), IatiError> {
    if parse_date(&flow.occurred_on).is_none() {
        return Err(bad(
            flow,
            format!("occurred_on {:?} is not a date", flow.occurred_on),
        ));
    }
    if OffsetDateTime::parse(&flow.recorded_at, &Rfc3339).is_err() {
        return Err(bad(
            flow,
            format!("recorded_at {:?} is not RFC 3339", flow.recorded_at),
        ));
    }
    if let Some(date) = &flow.usd_rate_date
        && parse_date(date).is_none()
    {
        return Err(bad(flow, format!("usd_rate_date {date:?} is not a date")));
    }
    if fundflow_refdata::currency_by_code(&flow.currency).is_none() {
        return Err(bad(
            flow,
            format!("currency {:?} is not ISO 4217", flow.currency),
        ));
    }
    for allocation in &flow.allocations {
        if Decimal::from_str_exact(&allocation.value).is_err() {
            return Err(bad(
                flow,
                format!("value {:?} is not a decimal", allocation.value),
            ));
        }
    }
    Ok(())
}

/// How a kind is named in titles and descriptions.
fn label(kind: &str) -> &str {
    match kind {
        "pledged" => "Pledge",
        "paid" => "Payment",
        "parallel_funding" => "Parallel funding",
        "in_kind" => "In-kind donation",
        other => other,
    }
}

fn activity_element(
    id: &str,
    activity: &Gathered<'_>,
    related: Vec<Related>,
    publisher: &Publisher,
) -> Result<Activity, IatiError> {
    let mut flows = activity.flows.clone();
    flows.sort_by(|a, b| (&a.occurred_on, a.seq).cmp(&(&b.occurred_on, b.seq)));
    let first = flows.first().ok_or(IatiError::NothingToPublish)?;
    // The flow the activity is about: the pledge itself when it is in the file.
    let main = flows
        .iter()
        .find(|f| f.kind == "pledged")
        .copied()
        .unwrap_or(first);
    let by = |donor: &str| {
        if donor.is_empty() {
            String::new()
        } else {
            format!(" by {donor}")
        }
    };
    let title = match &activity.what {
        What::Pledge { pledge_id, .. } => format!("Pledge {pledge_id}{}", by(&main.donor)),
        What::ParallelFunding { grant } if !grant.is_empty() => format!(
            "Parallel funding {} for grant {grant}{}",
            main.own_id,
            by(&main.donor)
        ),
        _ => format!("{} {}{}", label(&main.kind), main.own_id, by(&main.donor)),
    };
    let description = match main.description.trim() {
        "" => format!("{title}, as recorded in fundflow by {}.", main.partner),
        given => given.to_owned(),
    };
    let donors: BTreeSet<&str> = flows
        .iter()
        .map(|f| f.donor.as_str())
        .filter(|d| !d.is_empty())
        .collect();
    let participating = donors
        .iter()
        .map(|donor| Participant {
            role: FUNDING,
            narrative: narrative(donor),
        })
        .chain(std::iter::once(Participant {
            role: IMPLEMENTING,
            narrative: narrative(&main.partner),
        }))
        .collect();
    // The pledge's own sector when the pledge is in the file, else the first the flows give.
    let sector = if main.kind == "pledged" {
        Some(main.sector.trim())
    } else {
        flows
            .iter()
            .map(|f| f.sector.trim())
            .find(|s| !s.is_empty())
    };
    let sector = sector.filter(|s| !s.is_empty()).map(|s| Sector {
        vocabulary: OWN_SECTORS,
        code: s.to_owned(),
        narrative: narrative(s),
    });
    let mut transaction = Vec::new();
    // Per currency: pledged minus paid, to tell whether anything is outstanding.
    let mut balance: BTreeMap<&str, Decimal> = BTreeMap::new();
    for flow in &flows {
        let pledged = flow.kind == "pledged";
        let kind = if pledged {
            INCOMING_PLEDGE
        } else {
            INCOMING_FUNDS
        };
        for (index, allocation) in flow.allocations.iter().enumerate() {
            let value = Decimal::from_str_exact(&allocation.value)
                .map_err(|err| bad(flow, format!("value {:?}: {err}", allocation.value)))?;
            let entry = balance.entry(flow.currency.as_str()).or_default();
            *entry = if pledged {
                entry.checked_add(value)
            } else {
                entry.checked_sub(value)
            }
            .ok_or_else(|| bad(flow, "the values overflow".to_owned()))?;
            transaction.push(transaction_element(flow, index, allocation, kind)?);
        }
    }
    let status = match &activity.what {
        What::Pledge { .. } if balance.values().any(|b| *b > Decimal::ZERO) => IMPLEMENTATION,
        _ => CLOSED,
    };
    // Checked in `check_flow`, so every flow has a date and a time; compared as instants.
    let last_updated = flows
        .iter()
        .filter_map(|f| {
            OffsetDateTime::parse(&f.recorded_at, &Rfc3339)
                .ok()
                .map(|t| (t, f.recorded_at.as_str()))
        })
        .max_by_key(|(t, _)| *t)
        .map_or_else(|| first.recorded_at.clone(), |(_, text)| text.to_owned());
    let started = flows
        .iter()
        .map(|f| f.occurred_on.as_str())
        .min()
        .unwrap_or(first.occurred_on.as_str())
        .to_owned();
    let hierarchy = match (&activity.what, related.is_empty()) {
        (What::ParallelFunding { .. }, false) => "2",
        _ => "1",
    };
    let default_currency = transaction
        .first()
        .map_or_else(|| first.currency.clone(), |t| t.value.currency.clone());
    let pledge = match &activity.what {
        What::Pledge { partner, pledge_id } => Some(PledgeRef {
            partner: partner.clone(),
            pledge_id: pledge_id.clone(),
        }),
        _ => None,
    };
    Ok(Activity {
        lang: publisher.lang.clone(),
        default_currency,
        hierarchy,
        last_updated,
        identifier: id.to_owned(),
        reporting_org: ReportingOrg {
            reference: publisher.ref_.clone(),
            kind: publisher.org_type.clone(),
            narrative: narrative(&publisher.name),
        },
        title: Text {
            narrative: narrative(&title),
        },
        description: Text {
            narrative: narrative(&description),
        },
        participating_org: participating,
        activity_status: Code { code: status },
        activity_date: ActivityDate {
            kind: ACTUAL_START,
            iso_date: started,
        },
        sector,
        transaction,
        related_activity: related,
        pledge,
    })
}

fn transaction_element(
    flow: &FlowItem,
    index: usize,
    allocation: &FlowAllocation,
    kind: &'static str,
) -> Result<Transaction, IatiError> {
    let in_kind = flow.kind == "in_kind";
    let named = |given: &str, reference: &str| {
        narrative(if given.trim().is_empty() {
            reference
        } else {
            given
        })
    };
    let (country, region) = match allocation.scope {
        Scope::Country => {
            let country = fundflow_refdata::country_by_alpha3(&allocation.key)
                .and_then(|i| fundflow_refdata::COUNTRIES.get(usize::from(i)))
                .ok_or_else(|| {
                    bad(
                        flow,
                        format!("country {:?} is not in the reference data", allocation.key),
                    )
                })?;
            let country = RecipientCountry {
                code: country.alpha2.to_owned(),
                narrative: named(&allocation.name, country.name),
            };
            (Some(country), None)
        }
        _ => {
            let region = fundflow_refdata::region_by_key(&allocation.key)
                .and_then(|i| fundflow_refdata::REGIONS.get(usize::from(i)))
                .ok_or_else(|| bad(flow, format!("{:?} is not a UN M49 area", allocation.key)))?;
            let region = RecipientRegion {
                code: region.key.to_owned(),
                vocabulary: UN_M49,
                narrative: named(&allocation.name, region.name),
            };
            (None, Some(region))
        }
    };
    let description = if in_kind && !allocation.items.is_empty() {
        let goods: Vec<String> = allocation
            .items
            .iter()
            .map(|i| format!("{} {} {}", i.item, i.quantity, i.unit))
            .collect();
        format!("In kind: {}", goods.join("; "))
    } else if !flow.description.trim().is_empty() {
        flow.description.clone()
    } else {
        format!("{} {}", label(&flow.kind), flow.own_id)
    };
    let organisation = |name: &str| {
        (!name.trim().is_empty()).then(|| OrgName {
            narrative: narrative(name),
        })
    };
    // The rate's date is the one IATI means; it is checked against the day of recording, which
    // is never after today, so that no value date is in the future.
    let recorded_on = flow
        .recorded_at
        .get(..10)
        .ok_or_else(|| IatiError::BadFlow {
            seq: flow.seq,
            message: format!("recorded_at {:?} is not an RFC 3339 time", flow.recorded_at),
        })?;
    let value_date = match (&flow.usd_rate, &flow.usd_rate_date) {
        (Some(_), Some(date)) if date.as_str() <= recorded_on => date.clone(),
        _ => flow.occurred_on.clone(),
    };
    Ok(Transaction {
        reference: format!("{}-{index}", flow.event_id),
        transaction_type: Code { code: kind },
        transaction_date: IsoDate {
            iso_date: flow.occurred_on.clone(),
        },
        value: Value {
            currency: flow.currency.clone(),
            value_date,
            amount: allocation.value.clone(),
        },
        description: Text {
            narrative: narrative(&description),
        },
        provider_org: organisation(&flow.donor),
        receiver_org: organisation(&allocation.organisation),
        disbursement_channel: in_kind.then_some(Code { code: AID_IN_KIND }),
        recipient_country: country,
        recipient_region: region,
        finance_type: in_kind.then_some(Code {
            code: STANDARD_GRANT,
        }),
        usd_equivalent: allocation.usd_equivalent.as_ref().map(|usd| UsdEquivalent {
            rate: flow.usd_rate.clone(),
            rate_date: flow.usd_rate_date.clone(),
            rate_source: flow.usd_rate_source.clone(),
            amount: usd.clone(),
        }),
        flow: FlowRef {
            seq: flow.seq,
            event_id: flow.event_id.clone(),
            partner: flow.partner.clone(),
            kind: flow.kind.clone(),
        },
        item: allocation
            .items
            .iter()
            .map(|i| Item {
                name: i.item.clone(),
                unit: i.unit.clone(),
                quantity: i.quantity.clone(),
            })
            .collect(),
    })
}

fn narrative(text: &str) -> Narrative {
    Narrative {
        text: text.to_owned(),
    }
}

// The document's shape. Field order is the schema's element order (xs:sequence), extension
// elements (`fundflow:…`, the schema's `##other`) last; attributes (`@…`) come first, as
// quick-xml writes them. An empty `Vec` writes nothing, a `None` is skipped.

#[derive(Serialize)]
struct Document {
    #[serde(rename = "@version")]
    version: &'static str,
    #[serde(rename = "@xmlns:fundflow")]
    namespace: &'static str,
    #[serde(rename = "@fundflow:as-of-seq")]
    as_of_seq: u64,
    #[serde(rename = "iati-activity")]
    activity: Vec<Activity>,
}

#[derive(Serialize)]
struct Activity {
    #[serde(rename = "@xml:lang")]
    lang: String,
    #[serde(rename = "@default-currency")]
    default_currency: String,
    #[serde(rename = "@hierarchy")]
    hierarchy: &'static str,
    #[serde(rename = "@last-updated-datetime")]
    last_updated: String,
    #[serde(rename = "iati-identifier")]
    identifier: String,
    #[serde(rename = "reporting-org")]
    reporting_org: ReportingOrg,
    title: Text,
    description: Text,
    #[serde(rename = "participating-org")]
    participating_org: Vec<Participant>,
    #[serde(rename = "activity-status")]
    activity_status: Code,
    #[serde(rename = "activity-date")]
    activity_date: ActivityDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    sector: Option<Sector>,
    transaction: Vec<Transaction>,
    #[serde(rename = "related-activity")]
    related_activity: Vec<Related>,
    #[serde(rename = "fundflow:pledge", skip_serializing_if = "Option::is_none")]
    pledge: Option<PledgeRef>,
}

#[derive(Serialize)]
struct Narrative {
    #[serde(rename = "$text")]
    text: String,
}

#[derive(Serialize)]
struct Text {
    narrative: Narrative,
}

#[derive(Serialize)]
struct ReportingOrg {
    #[serde(rename = "@ref")]
    reference: String,
    #[serde(rename = "@type")]
    kind: String,
    narrative: Narrative,
}

#[derive(Serialize)]
struct Participant {
    #[serde(rename = "@role")]
    role: &'static str,
    narrative: Narrative,
}

#[derive(Serialize)]
struct Code {
    #[serde(rename = "@code")]
    code: &'static str,
}

#[derive(Serialize)]
struct ActivityDate {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "@iso-date")]
    iso_date: String,
}

#[derive(Serialize)]
struct Sector {
    #[serde(rename = "@vocabulary")]
    vocabulary: &'static str,
    #[serde(rename = "@code")]
    code: String,
    narrative: Narrative,
}

#[derive(Serialize)]
struct Related {
    #[serde(rename = "@ref")]
    reference: String,
    #[serde(rename = "@type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct PledgeRef {
    #[serde(rename = "@partner")]
    partner: String,
    #[serde(rename = "@pledge-id")]
    pledge_id: String,
}

#[derive(Serialize)]
struct IsoDate {
    #[serde(rename = "@iso-date")]
    iso_date: String,
}

#[derive(Serialize)]
struct Value {
    #[serde(rename = "@currency")]
    currency: String,
    #[serde(rename = "@value-date")]
    value_date: String,
    #[serde(rename = "$text")]
    amount: String,
}

#[derive(Serialize)]
struct OrgName {
    narrative: Narrative,
}

#[derive(Serialize)]
struct RecipientCountry {
    #[serde(rename = "@code")]
    code: String,
    narrative: Narrative,
}

#[derive(Serialize)]
struct RecipientRegion {
    #[serde(rename = "@code")]
    code: String,
    #[serde(rename = "@vocabulary")]
    vocabulary: &'static str,
    narrative: Narrative,
}

#[derive(Serialize)]
struct UsdEquivalent {
    #[serde(rename = "@rate", skip_serializing_if = "Option::is_none")]
    rate: Option<String>,
    #[serde(rename = "@rate-date", skip_serializing_if = "Option::is_none")]
    rate_date: Option<String>,
    #[serde(rename = "@rate-source", skip_serializing_if = "Option::is_none")]
    rate_source: Option<String>,
    #[serde(rename = "$text")]
    amount: String,
}

#[derive(Serialize)]
struct FlowRef {
    #[serde(rename = "@seq")]
    seq: u64,
    #[serde(rename = "@event-id")]
    event_id: String,
    #[serde(rename = "@partner")]
    partner: String,
    #[serde(rename = "@kind")]
    kind: String,
}

#[derive(Serialize)]
struct Item {
    #[serde(rename = "@name")]
    name: String,
    #[serde(rename = "@unit")]
    unit: String,
    #[serde(rename = "@quantity")]
    quantity: String,
}

#[derive(Serialize)]
struct Transaction {
    #[serde(rename = "@ref")]
    reference: String,
    #[serde(rename = "transaction-type")]
    transaction_type: Code,
    #[serde(rename = "transaction-date")]
    transaction_date: IsoDate,
    value: Value,
    description: Text,
    #[serde(rename = "provider-org", skip_serializing_if = "Option::is_none")]
    provider_org: Option<OrgName>,
    #[serde(rename = "receiver-org", skip_serializing_if = "Option::is_none")]
    receiver_org: Option<OrgName>,
    #[serde(
        rename = "disbursement-channel",
        skip_serializing_if = "Option::is_none"
    )]
    disbursement_channel: Option<Code>,
    #[serde(rename = "recipient-country", skip_serializing_if = "Option::is_none")]
    recipient_country: Option<RecipientCountry>,
    #[serde(rename = "recipient-region", skip_serializing_if = "Option::is_none")]
    recipient_region: Option<RecipientRegion>,
    #[serde(rename = "finance-type", skip_serializing_if = "Option::is_none")]
    finance_type: Option<Code>,
    #[serde(
        rename = "fundflow:usd-equivalent",
        skip_serializing_if = "Option::is_none"
    )]
    usd_equivalent: Option<UsdEquivalent>,
    #[serde(rename = "fundflow:flow")]
    flow: FlowRef,
    #[serde(rename = "fundflow:item")]
    item: Vec<Item>,
}

#[cfg(test)]
mod tests {
    use super::escape_id;

    #[test]
    fn safe_ids_are_kept_as_they_are() {
        assert_eq!(escape_id("sg-2020-01"), "sg-2020-01");
        assert_eq!(escape_id("A.b_C-9"), "A.b_C-9");
        assert_eq!(escape_id(""), "");
    }

    #[test]
    fn what_iati_forbids_is_percent_encoded_in_upper_case() {
        assert_eq!(escape_id("a b/c&d|e?f"), "a%20b%2Fc%26d%7Ce%3Ff");
        assert_eq!(escape_id("x:y#z"), "x%3Ay%23z");
        assert_eq!(escape_id("é"), "%C3%A9");
        assert_eq!(escape_id("\n"), "%0A");
        for id in ["a b", "a/b", "a&b", "a|b", "a?b", "tab\there"] {
            let escaped = escape_id(id);
            assert!(
                !escaped.contains([' ', '/', '&', '|', '?', '\t']),
                "{escaped}"
            );
        }
    }

    #[test]
    fn the_percent_sign_is_escaped_so_distinct_ids_stay_distinct() {
        assert_eq!(escape_id("50%"), "50%25");
        assert_eq!(escape_id("a%20b"), "a%2520b");
        assert_ne!(escape_id("a b"), escape_id("a%20b"));
        let ids = ["a b", "a%20b", "a+b", "a_b", "a%2520b", "ä", "%C3%A4"];
        let escaped: std::collections::BTreeSet<String> =
            ids.iter().map(|i| escape_id(i)).collect();
        assert_eq!(escaped.len(), ids.len());
    }
}
