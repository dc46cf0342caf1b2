//! The IATI file of a hand-made set of flows: valid against the official 2.03 schema (xmllint),
//! and keeping the standard's rules the schema does not check: codes from the codelists, one
//! recipient per transaction and none per activity, transaction types 1, 11 and 13 only,
//! value dates present and not in the future, identifiers under the publisher's ref, related
//! activities that exist, no reversed flow, and every amount exact. Then the mapping itself,
//! activity by activity, determinism, and the refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use fundflow_api::{FlowAllocation, FlowItem, FlowStatus, ItemQuantity};
use fundflow_domain::Scope;
use fundflow_interop::iati::{FUNDFLOW_NS, IatiError, Publisher, activities};
use quick_xml::events::{BytesStart, Event};
use rust_decimal::Decimal;

const REF: &str = "XI-IATI-FUNDFLOW";
const AS_OF: u64 = 42;

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("iati-2.03")
}

fn publisher() -> Publisher {
    Publisher {
        ref_: REF.into(),
        org_type: "80".into(),
        name: "Fundflow Secretariat".into(),
        lang: "en".into(),
    }
}

fn event_id(seq: u64) -> String {
    format!("00000000-0000-4000-8000-{seq:012}")
}

fn to(scope: Scope, key: &str, name: &str, value: &str, usd: Option<&str>) -> FlowAllocation {
    FlowAllocation {
        scope,
        key: key.into(),
        name: name.into(),
        organisation: String::new(),
        value: value.into(),
        usd_equivalent: usd.map(str::to_owned),
        items: Vec::new(),
    }
}

fn item(item: &str, unit: &str, quantity: &str) -> ItemQuantity {
    ItemQuantity {
        item: item.into(),
        unit: unit.into(),
        quantity: quantity.into(),
    }
}

/// A flow in USD at rate 1 (change what differs).
fn flow(seq: u64, partner: &str, kind: &str, grant: &str, occurred_on: &str) -> FlowItem {
    let event_type = match kind {
        "pledged" => "pledge_recorded",
        "paid" => "contribution_paid",
        "parallel_funding" => "parallel_funding_mobilized",
        _ => "in_kind_donation_recorded",
    };
    FlowItem {
        seq,
        event_id: event_id(seq),
        partner: partner.into(),
        event_type: event_type.into(),
        own_id: if kind == "pledged" {
            grant.into()
        } else {
            format!("{kind}-{seq}")
        },
        kind: kind.into(),
        occurred_on: occurred_on.into(),
        recorded_at: format!("{occurred_on}T09:30:00Z"),
        donor: String::new(),
        grant: grant.into(),
        sector: String::new(),
        description: String::new(),
        currency: "USD".into(),
        amount: String::new(),
        usd_rate: Some("1".into()),
        usd_rate_date: Some(occurred_on.into()),
        usd_rate_source: Some("fixed".into()),
        usd_equivalent: None,
        status: FlowStatus::Applied,
        reversed_by: None,
        reversed_seq: None,
        reason: None,
        allocations: Vec::new(),
    }
}

fn with(mut flow: FlowItem, allocations: Vec<FlowAllocation>) -> FlowItem {
    let total: Decimal = allocations
        .iter()
        .map(|a| Decimal::from_str_exact(&a.value).unwrap())
        .sum();
    flow.amount = total.to_string();
    flow.allocations = allocations;
    flow
}

fn flows() -> Vec<FlowItem> {
    use Scope::{Country, Global, Intermediate, Region};
    // A pledge to a country and an M49 intermediate region, partly paid.
    let mut pledge = flow(1, "icshp", "pledged", "sg 2020/01", "2020-03-02");
    pledge.donor = "Foundation X & Co".into();
    pledge.description = "Cholera response, Horn of Africa".into();
    let mut kenya = to(Country, "KEN", "Kenya", "6000.00", Some("6000.00"));
    kenya.organisation = "Kenya Red Cross".into();
    let pledge = with(
        pledge,
        vec![
            kenya,
            to(
                Intermediate,
                "014",
                "Eastern Africa",
                "4000.00",
                Some("4000.00"),
            ),
        ],
    );
    let mut payment = flow(2, "icshp", "paid", "sg 2020/01", "2020-04-10");
    payment.donor = "Foundation X & Co".into();
    let payment = with(
        payment,
        vec![to(Country, "KEN", "Kenya", "2500.00", Some("2500.00"))],
    );
    // A payment without a pledge, in EUR with a rate of another day.
    let mut unpledged = flow(3, "cabc", "paid", "", "2020-05-04");
    unpledged.currency = "EUR".into();
    unpledged.usd_rate = Some("1.1".into());
    unpledged.usd_rate_date = Some("2020-05-01".into());
    unpledged.usd_rate_source = Some("ECB".into());
    let unpledged = with(
        unpledged,
        vec![to(Country, "UGA", "Uganda", "300.00", Some("330.00"))],
    );
    // Parallel funding from another partner for the pledge's grant, in JPY without a rate.
    let mut parallel = flow(4, "cabc", "parallel_funding", "sg 2020/01", "2020-06-01");
    parallel.donor = "Government of Japan".into();
    parallel.currency = "JPY".into();
    (
        parallel.usd_rate,
        parallel.usd_rate_date,
        parallel.usd_rate_source,
    ) = (None, None, None);
    let parallel = with(parallel, vec![to(Global, "001", "World", "500000", None)]);
    // Parallel funding for a grant no pledge in the file has.
    let mut orphan = flow(5, "ffrc", "parallel_funding", "no-such-grant", "2020-06-02");
    orphan.donor = "City of Geneva".into();
    let orphan = with(
        orphan,
        vec![to(Country, "TZA", "Tanzania", "64700.00", Some("64700.00"))],
    );
    // In kind, to Nepal and Nigeria.
    let mut in_kind = flow(6, "icshp", "in_kind", "", "2020-07-07");
    in_kind.donor = "MedSupply Ltd".into();
    let mut nepal = to(Country, "NPL", "Nepal", "20000.00", Some("20000.00"));
    nepal.items = vec![
        item("masks", "piece", "210000"),
        item("gloves", "box", "200"),
    ];
    let mut nigeria = to(Country, "NGA", "Nigeria", "750.00", Some("750.00"));
    nigeria.items = vec![item("soap", "carton", "30")];
    let in_kind = with(in_kind, vec![nepal, nigeria]);
    // A reversed pledge, and a payment against it that stands.
    let mut reversed = flow(7, "cabc", "pledged", "gone", "2020-02-01");
    reversed.status = FlowStatus::Reversed;
    reversed.reversed_by = Some(event_id(99));
    reversed.reversed_seq = Some(99);
    let reversed = with(
        reversed,
        vec![to(Country, "IND", "India", "99.00", Some("99.00"))],
    );
    let against_reversed = with(
        flow(8, "cabc", "paid", "gone", "2020-02-03"),
        vec![to(Country, "IND", "India", "40.00", Some("40.00"))],
    );
    // A GBP pledge with a sector, paid in full, recorded in two days.
    let mut gbp = flow(9, "ffrc", "pledged", "p-9", "2020-01-20");
    gbp.sector = "WASH".into();
    gbp.donor = "UK Trust".into();
    gbp.currency = "GBP".into();
    gbp.usd_rate = Some("1.25".into());
    gbp.usd_rate_source = Some("BoE".into());
    let gbp = with(
        gbp,
        vec![to(Region, "002", "Africa", "800.00", Some("1000.00"))],
    );
    let mut gbp_paid = flow(10, "ffrc", "paid", "p-9", "2020-01-25");
    gbp_paid.sector = "WASH".into();
    gbp_paid.currency = "GBP".into();
    gbp_paid.recorded_at = "2020-08-01T12:00:00.25Z".into();
    gbp_paid.usd_rate = None;
    gbp_paid.usd_rate_date = None;
    let gbp_paid = with(gbp_paid, vec![to(Region, "002", "Africa", "800.00", None)]);
    // Another partner's pledge of the same id: a second parent of the parallel funding.
    let same_id = with(
        flow(11, "ffrc", "pledged", "sg 2020/01", "2020-03-05"),
        vec![to(Country, "ETH", "Ethiopia", "1000.00", Some("1000.00"))],
    );
    vec![
        pledge,
        payment,
        unpledged,
        parallel,
        orphan,
        in_kind,
        reversed,
        against_reversed,
        gbp,
        gbp_paid,
        same_id,
    ]
}

/// An element of the written file.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    attributes: BTreeMap<String, String>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn attr(&self, name: &str) -> &str {
        self.attributes
            .get(name)
            .unwrap_or_else(|| panic!("<{}> has no @{name}: {self:?}", self.name))
    }

    fn all(&self, name: &str) -> std::vec::IntoIter<&Node> {
        let found: Vec<&Node> = self.children.iter().filter(|c| c.name == name).collect();
        found.into_iter()
    }

    fn one(&self, name: &str) -> &Node {
        let found: Vec<_> = self.all(name).collect();
        assert_eq!(
            found.len(),
            1,
            "<{}> has {} <{name}>",
            self.name,
            found.len()
        );
        found[0]
    }

    fn narrative(&self) -> &str {
        &self.one("narrative").text
    }

    /// Every element below, depth first.
    fn descendants(&self) -> Vec<&Node> {
        let mut out = Vec::new();
        for c in &self.children {
            out.push(c);
            out.extend(c.descendants());
        }
        out
    }
}

fn node(e: &BytesStart<'_>) -> Node {
    Node {
        name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
        attributes: e
            .attributes()
            .map(|a| {
                let a = a.unwrap();
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.unescape_value().unwrap().into_owned(),
                )
            })
            .collect(),
        text: String::new(),
        children: Vec::new(),
    }
}

fn parse(xml: &str) -> Node {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut open: Vec<Node> = Vec::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) => open.push(node(&e)),
            Event::Empty(e) => {
                let done = node(&e);
                open.last_mut().unwrap().children.push(done);
            }
            Event::Text(t) => {
                if let Some(n) = open.last_mut() {
                    n.text.push_str(&t.decode().unwrap());
                }
            }
            Event::GeneralRef(r) => {
                let text = open.last_mut().unwrap();
                match r.resolve_char_ref().unwrap() {
                    Some(c) => text.text.push(c),
                    None => {
                        let name = r.decode().unwrap();
                        let c = quick_xml::escape::resolve_xml_entity(&name).unwrap();
                        text.text.push_str(c);
                    }
                }
            }
            Event::End(_) => {
                let done = open.pop().unwrap();
                match open.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return done,
                }
            }
            Event::Eof => panic!("the document ends before its root does"),
            _ => {}
        }
    }
}

fn codes(list: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(schema_dir().join("codelists").join(list)).unwrap();
    let codes: BTreeSet<String> = parse(&text)
        .descendants()
        .into_iter()
        .filter(|n| n.name == "code")
        .map(|n| n.text.trim().to_owned())
        .collect();
    assert!(codes.len() > 3, "{list} read as {codes:?}");
    codes
}

fn xmllint(xml: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("activities.xml");
    std::fs::write(&file, xml).unwrap();
    let schema = schema_dir().join("iati-activities-schema.xsd");
    let output = Command::new("xmllint")
        .args(["--nonet", "--noout", "--schema"])
        .arg(&schema)
        .arg(&file)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "xmllint cannot run ({err}): install Debian's libxml2-utils \
                 (apt-get install libxml2-utils, or deploy/xml/install-xmllint.sh)"
            )
        });
    assert!(
        output.status.success(),
        "the file does not validate against the IATI 2.03 schema:\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(xml)
    );
}

fn export() -> (Vec<FlowItem>, fundflow_interop::iati::IatiExport, Node) {
    let flows = flows();
    let export = activities(&flows, &publisher(), AS_OF).unwrap();
    let root = parse(std::str::from_utf8(&export.xml).unwrap());
    (flows, export, root)
}

fn activity<'a>(root: &'a Node, identifier: &str) -> &'a Node {
    root.all("iati-activity")
        .find(|a| a.one("iati-identifier").text == identifier)
        .unwrap_or_else(|| panic!("no activity {identifier}"))
}

fn types(activity: &Node) -> Vec<&str> {
    activity
        .all("transaction")
        .map(|t| t.one("transaction-type").attr("code"))
        .collect()
}

fn pledge_id(partner: &str, pledge: &str) -> String {
    format!("{REF}-{partner}.{pledge}")
}

fn event_activity(seq: u64) -> String {
    format!("{REF}-{}", event_id(seq))
}

#[test]
fn the_file_validates_against_the_iati_2_03_schema() {
    let (_, export, _) = export();
    xmllint(&export.xml);
}

#[test]
fn the_file_keeps_the_rules_the_schema_does_not_check() {
    let (flows, export, root) = export();
    let countries = codes("Country.xml");
    let currencies = codes("Currency.xml");
    let transaction_types = codes("TransactionType.xml");
    let today = time::OffsetDateTime::now_utc().date();
    let date = time::macros::format_description!("[year]-[month]-[day]");

    let activities: Vec<&Node> = root.all("iati-activity").collect();
    assert_eq!(activities.len(), export.activities);
    let identifiers: BTreeSet<&str> = activities
        .iter()
        .map(|a| a.one("iati-identifier").text.as_str())
        .collect();
    assert_eq!(identifiers.len(), activities.len(), "identifiers repeat");
    for id in &identifiers {
        assert!(id.starts_with(&format!("{REF}-")), "{id}");
        assert!(!id.contains([' ', '/', '&', '|', '?']), "{id}");
    }
    let mut related = 0;
    for a in &activities {
        assert!(currencies.contains(a.attr("default-currency")), "{a:?}");
        assert!(a.all("recipient-country").next().is_none());
        assert!(a.all("recipient-region").next().is_none());
        for r in a.all("related-activity") {
            related += 1;
            assert!(identifiers.contains(r.attr("ref")), "{r:?}");
        }
    }
    assert_eq!(
        related, 4,
        "two parents named by the child, each naming it back"
    );

    let mut transactions = 0;
    let mut sums: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    for t in activities.iter().flat_map(|a| a.all("transaction")) {
        transactions += 1;
        let kind = t.one("transaction-type").attr("code");
        assert!(["1", "11", "13"].contains(&kind), "{t:?}");
        assert!(transaction_types.contains(kind));
        let countries_here: Vec<_> = t.all("recipient-country").collect();
        let regions_here: Vec<_> = t.all("recipient-region").collect();
        assert_eq!(
            countries_here.len() + regions_here.len(),
            1,
            "one recipient per transaction: {t:?}"
        );
        let recipient = if let Some(c) = countries_here.first() {
            assert!(countries.contains(c.attr("code")), "{c:?}");
            c.attr("code").to_owned()
        } else {
            let r = regions_here[0];
            assert_eq!(r.attr("vocabulary"), "2", "{r:?}");
            let code = r.attr("code");
            assert!(
                code.len() == 3
                    && fundflow_refdata::REGIONS
                        .iter()
                        .any(|region| region.key == code),
                "{code} is not a UN M49 area"
            );
            code.to_owned()
        };
        assert!(!t.one("description").narrative().is_empty());
        let value = t.one("value");
        let value_date = time::Date::parse(value.attr("value-date"), date).unwrap();
        assert!(value_date <= today, "{value:?}");
        let currency = value.attr("currency");
        assert!(currencies.contains(currency), "{value:?}");
        *sums.entry((currency.to_owned(), recipient)).or_default() +=
            Decimal::from_str_exact(&value.text).unwrap();
    }
    assert_eq!(transactions, export.transactions);
    assert_eq!(transactions, 12);

    let mut expected: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    for f in flows.iter().filter(|f| f.status == FlowStatus::Applied) {
        for a in &f.allocations {
            let key = match a.scope {
                Scope::Country => {
                    let i = fundflow_refdata::country_by_alpha3(&a.key).unwrap();
                    fundflow_refdata::COUNTRIES[usize::from(i)]
                        .alpha2
                        .to_owned()
                }
                _ => a.key.clone(),
            };
            *expected.entry((f.currency.clone(), key)).or_default() +=
                Decimal::from_str_exact(&a.value).unwrap();
        }
    }
    assert_eq!(sums, expected);

    let xml = std::str::from_utf8(&export.xml).unwrap();
    assert!(
        !xml.contains(&event_id(7)),
        "the reversed flow was published"
    );
}

#[test]
fn the_root_names_the_version_the_extension_and_the_checkpoint_but_no_clock() {
    let (_, export, root) = export();
    assert_eq!(root.name, "iati-activities");
    assert_eq!(root.attr("version"), "2.03");
    assert_eq!(root.attr("xmlns:fundflow"), FUNDFLOW_NS);
    assert_eq!(root.attr("fundflow:as-of-seq"), AS_OF.to_string());
    assert!(!root.attributes.contains_key("generated-datetime"));
    let xml = std::str::from_utf8(&export.xml).unwrap();
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<iati-activities "));
    // Activities in identifier order.
    let ids: Vec<&str> = root
        .all("iati-activity")
        .map(|a| a.one("iati-identifier").text.as_str())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            pledge_id("cabc", "gone").as_str(),
            pledge_id("ffrc", "p-9").as_str(),
            pledge_id("ffrc", "sg%202020%2F01").as_str(),
            pledge_id("icshp", "sg%202020%2F01").as_str(),
            event_activity(3).as_str(),
            event_activity(4).as_str(),
            event_activity(5).as_str(),
            event_activity(6).as_str(),
        ])
    );
}

#[test]
fn a_pledge_holds_its_allocations_as_type_13_and_its_payments_as_type_1() {
    let (_, _, root) = export();
    let a = activity(&root, &pledge_id("icshp", "sg%202020%2F01"));
    assert_eq!(a.attr("xml:lang"), "en");
    assert_eq!(a.attr("hierarchy"), "1");
    assert_eq!(a.attr("default-currency"), "USD");
    assert_eq!(a.attr("last-updated-datetime"), "2020-04-10T09:30:00Z");
    assert_eq!(types(a), ["13", "13", "1"]);
    let refs: Vec<&str> = a.all("transaction").map(|t| t.attr("ref")).collect();
    assert_eq!(
        refs,
        [
            format!("{}-0", event_id(1)),
            format!("{}-1", event_id(1)),
            format!("{}-0", event_id(2)),
        ]
    );
    let reporting = a.one("reporting-org");
    assert_eq!((reporting.attr("ref"), reporting.attr("type")), (REF, "80"));
    assert_eq!(
        a.one("title").narrative(),
        "Pledge sg 2020/01 by Foundation X & Co"
    );
    assert_eq!(
        a.one("description").narrative(),
        "Cholera response, Horn of Africa"
    );
    let orgs: Vec<(&str, &str)> = a
        .all("participating-org")
        .map(|o| (o.attr("role"), o.narrative()))
        .collect();
    assert_eq!(orgs, [("1", "Foundation X & Co"), ("4", "icshp")]);
    assert!(
        a.all("participating-org")
            .all(|o| !o.attributes.contains_key("ref"))
    );
    assert_eq!(
        a.one("activity-status").attr("code"),
        "2",
        "7500 outstanding"
    );
    let start = a.one("activity-date");
    assert_eq!(
        (start.attr("type"), start.attr("iso-date")),
        ("2", "2020-03-02")
    );
    assert!(a.all("sector").next().is_none());
    let first = a.all("transaction").next().unwrap();
    assert_eq!(first.one("transaction-date").attr("iso-date"), "2020-03-02");
    assert_eq!(first.one("value").text, "6000.00");
    assert_eq!(first.one("provider-org").narrative(), "Foundation X & Co");
    assert_eq!(first.one("receiver-org").narrative(), "Kenya Red Cross");
    let kenya = first.one("recipient-country");
    assert_eq!((kenya.attr("code"), kenya.narrative()), ("KE", "Kenya"));
    let usd = first.one("fundflow:usd-equivalent");
    assert_eq!(usd.text, "6000.00");
    assert_eq!(
        (
            usd.attr("rate"),
            usd.attr("rate-date"),
            usd.attr("rate-source")
        ),
        ("1", "2020-03-02", "fixed")
    );
    let trace = first.one("fundflow:flow");
    assert_eq!(
        (
            trace.attr("seq"),
            trace.attr("event-id"),
            trace.attr("partner"),
            trace.attr("kind")
        ),
        ("1", event_id(1).as_str(), "icshp", "pledged")
    );
    let second = a.all("transaction").nth(1).unwrap();
    assert!(second.all("receiver-org").next().is_none());
    let region = second.one("recipient-region");
    assert_eq!(
        (
            region.attr("code"),
            region.attr("vocabulary"),
            region.narrative()
        ),
        ("014", "2", "Eastern Africa")
    );
    let back: Vec<(&str, &str)> = a
        .all("related-activity")
        .map(|r| (r.attr("type"), r.attr("ref")))
        .collect();
    assert_eq!(back, [("2", event_activity(4).as_str())]);
    let pledge = a.one("fundflow:pledge");
    assert_eq!(
        (pledge.attr("partner"), pledge.attr("pledge-id")),
        ("icshp", "sg 2020/01")
    );
    // The extension comes after the schema's elements.
    assert_eq!(a.children.last().unwrap().name, "fundflow:pledge");
}

#[test]
fn a_paid_pledge_is_closed_and_carries_its_sector_once() {
    let (_, _, root) = export();
    let a = activity(&root, &pledge_id("ffrc", "p-9"));
    assert_eq!(types(a), ["13", "1"]);
    assert_eq!(a.attr("default-currency"), "GBP");
    assert_eq!(a.one("activity-status").attr("code"), "4");
    // Compared as instants: .25 seconds after noon is later than 09:30.
    assert_eq!(a.attr("last-updated-datetime"), "2020-08-01T12:00:00.25Z");
    let sector = a.one("sector");
    assert_eq!(
        (
            sector.attr("vocabulary"),
            sector.attr("code"),
            sector.narrative()
        ),
        ("99", "WASH", "WASH")
    );
    assert!(!sector.attributes.contains_key("percentage"));
    assert!(
        a.all("transaction")
            .all(|t| t.all("sector").next().is_none())
    );
    let paid = a.all("transaction").nth(1).unwrap();
    assert!(paid.all("fundflow:usd-equivalent").next().is_none());
    assert_eq!(paid.one("value").attr("value-date"), "2020-01-25");
}

#[test]
fn a_payment_whose_pledge_was_reversed_still_goes_to_the_pledges_activity() {
    let (_, _, root) = export();
    let a = activity(&root, &pledge_id("cabc", "gone"));
    assert_eq!(types(a), ["1"]);
    assert_eq!(a.one("activity-status").attr("code"), "4");
    assert_eq!(a.one("title").narrative(), "Pledge gone");
    assert!(a.all("related-activity").next().is_none());
}

#[test]
fn a_payment_without_a_pledge_is_its_own_activity_valued_at_its_rate_date() {
    let (_, _, root) = export();
    let a = activity(&root, &event_activity(3));
    assert_eq!(types(a), ["1"]);
    assert_eq!(a.attr("default-currency"), "EUR");
    assert_eq!(a.one("activity-status").attr("code"), "4");
    assert_eq!(a.one("title").narrative(), "Payment paid-3");
    assert!(!a.one("description").narrative().is_empty());
    let t = a.one("transaction");
    assert_eq!(t.one("transaction-date").attr("iso-date"), "2020-05-04");
    let value = t.one("value");
    assert_eq!(
        (
            value.text.as_str(),
            value.attr("currency"),
            value.attr("value-date")
        ),
        ("300.00", "EUR", "2020-05-01")
    );
    assert!(t.all("provider-org").next().is_none(), "no donor given");
    assert_eq!(t.one("fundflow:usd-equivalent").text, "330.00");
    let orgs: Vec<&str> = a.all("participating-org").map(|o| o.attr("role")).collect();
    assert_eq!(orgs, ["4"]);
}

#[test]
fn parallel_funding_for_a_pledged_grant_is_a_child_of_each_pledge_of_that_id() {
    let (_, _, root) = export();
    let a = activity(&root, &event_activity(4));
    assert_eq!(a.attr("hierarchy"), "2");
    assert_eq!(a.attr("default-currency"), "JPY");
    assert_eq!(
        a.one("title").narrative(),
        "Parallel funding parallel_funding-4 for grant sg 2020/01 by Government of Japan"
    );
    let parents: Vec<(&str, &str)> = a
        .all("related-activity")
        .map(|r| (r.attr("type"), r.attr("ref")))
        .collect();
    let (ffrc, icshp) = (
        pledge_id("ffrc", "sg%202020%2F01"),
        pledge_id("icshp", "sg%202020%2F01"),
    );
    assert_eq!(parents, [("1", ffrc.as_str()), ("1", icshp.as_str())]);
    for parent in [&ffrc, &icshp] {
        let back: Vec<(&str, &str)> = activity(&root, parent)
            .all("related-activity")
            .map(|r| (r.attr("type"), r.attr("ref")))
            .collect();
        assert_eq!(back, [("2", event_activity(4).as_str())]);
    }
    let t = a.one("transaction");
    assert_eq!(t.one("transaction-type").attr("code"), "1");
    assert_eq!(t.one("provider-org").narrative(), "Government of Japan");
    assert_eq!(t.one("value").attr("value-date"), "2020-06-01", "no rate");
    assert_eq!(t.one("recipient-region").attr("code"), "001");
    assert!(t.all("fundflow:usd-equivalent").next().is_none());

    let orphan = activity(&root, &event_activity(5));
    assert_eq!(orphan.attr("hierarchy"), "1");
    assert!(orphan.all("related-activity").next().is_none());
}

#[test]
fn in_kind_goods_are_aid_in_kind_with_their_quantities() {
    let (_, _, root) = export();
    let a = activity(&root, &event_activity(6));
    assert_eq!(types(a), ["1", "1"]);
    let t: Vec<&Node> = a.all("transaction").collect();
    for t in &t {
        assert_eq!(t.one("disbursement-channel").attr("code"), "4");
        assert_eq!(t.one("finance-type").attr("code"), "110");
        assert_eq!(t.one("provider-org").narrative(), "MedSupply Ltd");
    }
    assert_eq!(t[0].one("recipient-country").attr("code"), "NP");
    assert_eq!(t[1].one("recipient-country").attr("code"), "NG");
    assert_eq!(
        t[0].one("description").narrative(),
        "In kind: masks 210000 piece; gloves 200 box"
    );
    let items: Vec<(&str, &str, &str)> = t[0]
        .all("fundflow:item")
        .map(|i| (i.attr("name"), i.attr("unit"), i.attr("quantity")))
        .collect();
    assert_eq!(
        items,
        [("masks", "piece", "210000"), ("gloves", "box", "200")]
    );
    assert_eq!(
        t[1].one("description").narrative(),
        "In kind: soap 30 carton"
    );
    // The transaction's children: the schema's sequence, then the extensions.
    let names: Vec<&str> = t[1].children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "transaction-type",
            "transaction-date",
            "value",
            "description",
            "provider-org",
            "disbursement-channel",
            "recipient-country",
            "finance-type",
            "fundflow:usd-equivalent",
            "fundflow:flow",
            "fundflow:item",
        ]
    );
}

#[test]
fn the_same_flows_in_another_order_give_the_same_bytes() {
    let flows = flows();
    let first = activities(&flows, &publisher(), AS_OF).unwrap().xml;
    let mut reversed = flows.clone();
    reversed.reverse();
    assert_eq!(
        first,
        activities(&reversed, &publisher(), AS_OF).unwrap().xml
    );
    let mut rotated = flows.clone();
    rotated.rotate_left(4);
    rotated.swap(0, 5);
    assert_eq!(
        first,
        activities(&rotated, &publisher(), AS_OF).unwrap().xml
    );
    assert_ne!(
        first,
        activities(&flows, &publisher(), AS_OF + 1).unwrap().xml,
        "the checkpoint is in the file"
    );
}

#[test]
fn without_an_applied_flow_there_is_nothing_to_publish() {
    let mut flows = flows();
    flows.retain(|f| f.status == FlowStatus::Reversed);
    assert_eq!(flows.len(), 1);
    assert!(matches!(
        activities(&flows, &publisher(), AS_OF),
        Err(IatiError::NothingToPublish)
    ));
    assert!(matches!(
        activities(&[], &publisher(), AS_OF),
        Err(IatiError::NothingToPublish)
    ));
}

#[test]
fn pledges_whose_partner_and_id_run_together_stay_two_activities() {
    let one = with(
        flow(1, "a-b", "pledged", "c", "2020-01-01"),
        vec![to(Scope::Country, "KEN", "Kenya", "1.00", None)],
    );
    let other = with(
        flow(2, "a", "pledged", "b-c", "2020-01-01"),
        vec![to(Scope::Country, "KEN", "Kenya", "1.00", None)],
    );
    let export = activities(&[one, other], &publisher(), 2).unwrap();
    assert_eq!(export.activities, 2);
    let xml = String::from_utf8(export.xml).unwrap();
    assert!(xml.contains(&format!(
        "<iati-identifier>{}</iati-identifier>",
        pledge_id("a-b", "c")
    )));
    assert!(xml.contains(&format!(
        "<iati-identifier>{}</iati-identifier>",
        pledge_id("a", "b-c")
    )));
}

#[test]
fn flows_the_file_cannot_say_are_refused_with_their_seq() {
    let mut unknown = with(
        flow(3, "icshp", "paid", "", "2020-01-01"),
        vec![to(Scope::Country, "XXX", "Nowhere", "1.00", None)],
    );
    assert!(matches!(
        activities(std::slice::from_ref(&unknown), &publisher(), 3),
        Err(IatiError::BadFlow { seq: 3, .. })
    ));
    unknown.allocations[0] = to(Scope::Region, "999", "Nowhere", "1.00", None);
    assert!(matches!(
        activities(std::slice::from_ref(&unknown), &publisher(), 3),
        Err(IatiError::BadFlow { seq: 3, .. })
    ));
    let mut bad_kind = flow(4, "icshp", "granted", "", "2020-01-01");
    bad_kind.allocations = vec![to(Scope::Country, "KEN", "Kenya", "1.00", None)];
    assert!(matches!(
        activities(&[bad_kind], &publisher(), 4),
        Err(IatiError::BadFlow { seq: 4, .. })
    ));
    let mut bad_publisher = publisher();
    bad_publisher.ref_ = "XI IATI".into();
    assert!(matches!(
        activities(&flows(), &bad_publisher, AS_OF),
        Err(IatiError::BadPublisher { .. })
    ));
}

#[test]
fn a_rate_dated_after_the_day_of_recording_does_not_date_the_value() {
    let mut paid = with(
        flow(1, "icshp", "paid", "", "2020-03-01"),
        vec![to(Scope::Country, "KEN", "Kenya", "10.00", None)],
    );
    paid.usd_rate_date = Some("2999-01-01".into());
    let xml = String::from_utf8(activities(&[paid], &publisher(), 1).unwrap().xml).unwrap();
    assert!(
        xml.contains(r#"value-date="2020-03-01""#) && !xml.contains(r#"value-date="2999"#),
        "{xml}"
    );
}
