"""People and places of the demo city: warehouses, technicians, customers and UWB buildings.

Indoor sites use the site frame of ``geofence.uwb.SiteFrame``: metres, ``rotation_deg`` is the
bearing of the site's ``+y`` axis clockwise from true north. A building is 60 m × 40 m with its
south-west corner at the frame origin; the entrance is outside the south wall at (30, -4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

import numpy as np

from geofence.uwb import SiteFrame, local_to_wgs84
from pipelines.generate.geo import HALF_SIZE_M, REGIONS, region_box_m, region_of, to_latlon, to_xy

WAREHOUSES: Final = {"north": "WH-NORTH", "south": "WH-SOUTH", "east": "WH-EAST"}
WEBHOOK_BASE: Final = "http://127.0.0.1:8765/hooks/"
ENTRANCE_XY_M: Final = (30.0, -4.0)

_SURNAMES: Final = (
    "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou",
    "Xu", "Sun", "Ma", "Zhu", "Hu", "Guo", "He", "Lin", "Gao", "Luo",
)  # fmt: skip
_GIVEN: Final = (
    "Wei", "Fang", "Min", "Jing", "Lei", "Jun", "Yan", "Hui", "Qiang", "Ping",
    "Tao", "Hong", "Bo", "Xin", "Yu", "Hao",
)  # fmt: skip
_ROADS: Final = (
    "Yan'an", "Zhongshan", "Jiefang", "Fengqi", "Qingchun", "Huancheng", "Wenyi",
    "Wensan", "Tianmushan", "Moganshan", "Shixiang", "Qiutao", "Jianguo", "Xixi",
    "Binsheng", "Jiangnan", "Hushu", "Gudun", "Desheng", "Kaixuan",
)  # fmt: skip
_SHOPS: Final = (
    "Bakery", "Clinic", "Noodles", "Tea-House", "Pharmacy", "Hotel", "Office", "Café", "Dental",
)  # fmt: skip
_SKILLS: Final = ("hvac", "refrigeration", "electrical", "network", "plumbing")


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    name: str
    address: str
    x_m: float
    y_m: float
    lat: float
    lon: float
    region: str
    site_id: str | None = None
    target_id: str | None = None
    target_x_m: float | None = None
    target_y_m: float | None = None


@dataclass(frozen=True, slots=True)
class Technician:
    technician_id: str
    name: str
    region: str
    skills: tuple[str, ...]
    home_x_m: float
    home_y_m: float


@dataclass(frozen=True, slots=True)
class Site:
    """An indoor building covered by UWB; ``entrance_*`` is where GPS is lost."""

    site_id: str
    name: str
    frame: SiteFrame
    anchors: tuple[tuple[str, float, float, float], ...]
    targets: tuple[tuple[str, float, float], ...]
    entrance_x_m: float
    entrance_y_m: float

    def row(self) -> dict[str, object]:
        return {
            "site_id": self.site_id,
            "name": self.name,
            "origin_lat": round(self.frame.origin_lat, 8),
            "origin_lon": round(self.frame.origin_lon, 8),
            "origin_alt_m": self.frame.origin_alt_m,
            "rotation_deg": self.frame.rotation_deg,
            "anchors": json.dumps(
                [{"anchor_id": a, "x": x, "y": y, "z": z} for a, x, y, z in self.anchors]
            ),
            "targets": json.dumps([{"target_id": t, "x": x, "y": y} for t, x, y in self.targets]),
        }


def person_name(rng: np.random.Generator) -> str:
    return f"{_SURNAMES[rng.integers(len(_SURNAMES))]} {_GIVEN[rng.integers(len(_GIVEN))]}"


def address(rng: np.random.Generator, region: str) -> str:
    road = _ROADS[rng.integers(len(_ROADS))]
    return f"{int(rng.integers(1, 400))} {road} Rd, {region.title()} District, Hangzhou"


def warehouse_rows(wkt_of: dict[str, str]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for region in REGIONS:
        x0, y0, x1, y1 = region_box_m(region)
        lat, lon = to_latlon((x0 + x1) / 2, (y0 + y1) / 2)
        wid = WAREHOUSES[region]
        rows.append(
            {
                "warehouse_id": wid,
                "name": f"{region.title()} regional warehouse",
                "region": region,
                "lat": round(float(lat), 6),
                "lon": round(float(lon), 6),
                "coverage_wkt": wkt_of[region],
                "webhook_url": WEBHOOK_BASE + wid,
            }
        )
    return rows


def make_technicians(rng: np.random.Generator, n_per_region: int) -> list[Technician]:
    techs: list[Technician] = []
    for region in REGIONS:
        x0, y0, x1, y1 = region_box_m(region)
        for _ in range(n_per_region):
            k = int(rng.integers(1, 4))
            skills = tuple(sorted(rng.choice(_SKILLS, size=k, replace=False).tolist()))
            techs.append(
                Technician(
                    technician_id=f"TECH-{len(techs) + 1:03d}",
                    name=person_name(rng),
                    region=region,
                    skills=skills,
                    home_x_m=float(rng.uniform(x0 + 300, x1 - 300)),
                    home_y_m=float(rng.uniform(y0 + 300, y1 - 300)),
                )
            )
    return techs


def sample_points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Customer locations: 60 % uniform over the city, 40 % around six hubs (σ 1.5 km)."""
    hubs = np.array(
        [[-5000, 4000], [2000, 6000], [6000, -2000], [-3000, -5000], [0, 0], [7000, 6500]]
    )
    uniform = rng.random(n) < 0.6
    hub = hubs[rng.integers(len(hubs), size=n)]
    x = np.where(uniform, rng.uniform(-HALF_SIZE_M, HALF_SIZE_M, n), rng.normal(hub[:, 0], 1500))
    y = np.where(uniform, rng.uniform(-HALF_SIZE_M, HALF_SIZE_M, n), rng.normal(hub[:, 1], 1500))
    lim = HALF_SIZE_M - 200
    return np.clip(x, -lim, lim), np.clip(y, -lim, lim)


def make_customers(
    rng: np.random.Generator, x_m: np.ndarray, y_m: np.ndarray, first: int
) -> list[Customer]:
    lat, lon = to_latlon(x_m, y_m)
    regions = region_of(x_m, y_m)
    out: list[Customer] = []
    for i in range(len(x_m)):
        region = str(regions[i])
        name = (
            person_name(rng)
            if rng.random() < 0.7
            else f"{_SURNAMES[rng.integers(len(_SURNAMES))]}'s {_SHOPS[rng.integers(len(_SHOPS))]}"
        )
        out.append(
            Customer(
                customer_id=f"CUST-{first + i:05d}",
                name=name,
                address=address(rng, region),
                x_m=float(x_m[i]),
                y_m=float(y_m[i]),
                lat=float(lat[i]),
                lon=float(lon[i]),
                region=region,
            )
        )
    return out


def make_sites(
    rng: np.random.Generator, n_sites: int, first_customer: int
) -> tuple[list[Site], list[Customer]]:
    """UWB buildings and one customer per unit (target); the ticket point is the target."""
    sites: list[Site] = []
    customers: list[Customer] = []
    bx, by = sample_points(rng, n_sites)
    for s in range(n_sites):
        site_id = f"SITE-{s + 1:02d}"
        olat, olon = to_latlon(bx[s], by[s])
        frame = SiteFrame(float(olat), float(olon), 0.0, float(np.round(rng.uniform(0, 90), 1)))
        anchors = (
            ("A1", 0.0, 0.0, 3.0),
            ("A2", 60.0, 0.0, 3.2),
            ("A3", 60.0, 40.0, 3.0),
            ("A4", 0.0, 40.0, 3.2),
            ("A5", 30.0, 20.0, 3.6),
        )
        n_units = int(rng.integers(6, 13))
        cells = rng.choice(24, size=n_units, replace=False)
        gx = np.array([6.0, 14.0, 22.0, 38.0, 46.0, 54.0])[cells % 6]
        gy = np.array([8.0, 16.0, 24.0, 32.0])[cells // 6]
        targets = tuple(
            (f"{site_id}-U{u + 1:02d}", float(gx[u]), float(gy[u])) for u in range(n_units)
        )
        elat, elon = local_to_wgs84([ENTRANCE_XY_M[0]], [ENTRANCE_XY_M[1]], frame)
        ex, ey = to_xy(elat[0], elon[0])
        sites.append(Site(site_id, f"Tower {s + 1}", frame, anchors, targets, float(ex), float(ey)))
        tlat, tlon = local_to_wgs84([t[1] for t in targets], [t[2] for t in targets], frame)
        tx, ty = to_xy(tlat, tlon)
        region = str(region_of(ex, ey))
        for u, (tid, x, y) in enumerate(targets):
            customers.append(
                Customer(
                    customer_id=f"CUST-{first_customer + len(customers):05d}",
                    name=person_name(rng),
                    address=f"Unit {u + 1}, Tower {s + 1}, {address(rng, region)}",
                    x_m=float(tx[u]),
                    y_m=float(ty[u]),
                    lat=float(tlat[u]),
                    lon=float(tlon[u]),
                    region=region,
                    site_id=site_id,
                    target_id=tid,
                    target_x_m=x,
                    target_y_m=y,
                )
            )
    return sites, customers
