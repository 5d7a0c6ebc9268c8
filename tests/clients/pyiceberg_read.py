"""Reads a table of thermocline's lake with pyiceberg, an independent
Iceberg implementation, and prints what it holds.

    pyiceberg_read.py WAREHOUSE NAMESPACE.TABLE
    pyiceberg_read.py s3://BUCKET/PREFIX NAMESPACE.TABLE CATALOG_DB ENDPOINT KEY SECRET
    pyiceberg_read.py http://REST-CATALOG NAMESPACE.TABLE TOKEN

Prints one line: rows, sum of id, sum of amount, and the watermark recorded
in the current snapshot's summary.
"""

import decimal
import sys

import pyarrow.compute as pc
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.catalog.sql import SqlCatalog


def main():
    warehouse, name = sys.argv[1], sys.argv[2]
    if warehouse.startswith("http://"):
        catalog = RestCatalog("thermocline", uri=warehouse, token=sys.argv[3])
    elif warehouse.startswith("s3://"):
        db, endpoint, key, secret = sys.argv[3:7]
        catalog = SqlCatalog(
            "thermocline",
            uri=f"sqlite:///{db}",
            warehouse=warehouse,
            **{
                "s3.endpoint": endpoint,
                "s3.access-key-id": key,
                "s3.secret-access-key": secret,
                "s3.region": "us-east-1",
            },
        )
    else:
        catalog = SqlCatalog(
            "thermocline",
            uri=f"sqlite:///{warehouse}/catalog.db",
            warehouse=f"file://{warehouse}",
        )
    table = catalog.load_table(name)
    rows = table.scan().to_arrow()
    ids = pc.sum(rows["id"]).as_py() or 0
    amount = pc.sum(rows["amount"]).as_py() or decimal.Decimal(0)
    summary = table.current_snapshot().summary
    print(f"{rows.num_rows} {ids} {amount} {summary['thermocline.watermark']}")


if __name__ == "__main__":
    main()
