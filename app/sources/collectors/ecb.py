"""ECB euro foreign-exchange reference rates (published once a day around 16:00 CET).

GET {base}/stats/eurofxref/eurofxref-daily.xml answers a gesmes envelope:
`<gesmes:Envelope ...><Cube><Cube time="2024-03-22"><Cube currency="USD" rate="1.0823"/>
...</Cube></Cube></gesmes:Envelope>`; rates are units of currency per 1 EUR.
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree.ElementTree import ParseError as XmlError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from app.core.errors import ParseError
from app.sources.collectors.base import Collector, Fetch
from app.sources.collectors.observation import Observation, datetime_to_ns, to_float, total_parser

PROVIDER = "ecb"
EUROFXREF_NS = "{http://www.ecb.int/vocabulary/2002-08-01/eurofxref}"
ENVELOPE = "{http://www.gesmes.org/xml/2002-08-01}Envelope"


@total_parser
def parse_ecb(body: bytes, series: str) -> list[Observation]:
    """One observation per currency, EUR<CCY>, at the reference date (00:00 UTC)."""
    try:
        # defusedxml: no entity declarations (no billion laughs), no external DTD or files
        root = fromstring(body)
    except XmlError as exc:
        raise ParseError("malformed_xml", f"not XML: {exc}") from None
    except DefusedXmlException as exc:
        raise ParseError("forbidden_xml", f"{type(exc).__name__}: {exc}"[:200]) from None
    if root.tag != ENVELOPE:
        raise ParseError(
            "unexpected_document", f"root element is {root.tag!r}, not gesmes:Envelope"
        )
    day_cube = next((c for c in root.iter(f"{EUROFXREF_NS}Cube") if "time" in c.attrib), None)
    if day_cube is None:
        raise ParseError("missing_field", "no <Cube time=...> in the envelope")
    try:
        day = datetime.strptime(day_cube.attrib["time"], "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ParseError("bad_time", f"Cube time is {day_cube.attrib['time']!r}") from None
    when = datetime_to_ns(day)
    out = []
    for cube in day_cube.findall(f"{EUROFXREF_NS}Cube"):
        currency = cube.attrib.get("currency")
        if not currency or "rate" not in cube.attrib:
            raise ParseError("missing_field", f"rate cube without currency/rate: {cube.attrib}")
        rate = to_float(cube.attrib["rate"], f"rate of {currency}")
        attrs = {"reference_date": day.date().isoformat(), "base": "EUR"}
        unit = currency.lower()
        out.append(Observation(PROVIDER, f"EUR{currency}", rate, unit, when, "fx", attrs))
    if not out:
        raise ParseError("no_data", "the day cube has no rates")
    return out


class EcbCollector(Collector):
    provider = PROVIDER
    category = "fx"
    parse = staticmethod(parse_ecb)

    def requests(self, api_key: str | None) -> list[Fetch]:
        path = self.cfg.params.get("path", "/stats/eurofxref/eurofxref-daily.xml")
        return [Fetch(f"{self.base_url}{path}")]
