"""Shared test data for the fleet tests."""

from __future__ import annotations

GOOD = """\
version: 1
levels: [region, zone, fabric, block, rack]
templates:
  h100-8x:
    gpu_model: h100
    gpu_count: 8
    vcpus: 224
    ram_gib: 2048
    nvme_tib: 30
    capex: "250000.00"
    book_life_years: 5
    labels: {pool: training}
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:
      - name: us-east-1a-ib01
        template: h100-8x
        blocks: 2
        racks_per_block: 2
        nodes_per_rack: 4
        in_service: 2026-01-15
        bmc: "https://{hostname}.bmc.example"
    nodes:
      - hostname: special-01
        template: h100-8x
        topology: {fabric: us-east-1a-ib01, block: us-east-1a-ib01-b01, rack: rack-special}
        labels: {pool: research}
"""
