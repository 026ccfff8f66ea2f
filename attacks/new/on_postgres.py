"""Run attacks/new scripts against a throwaway PostgreSQL (tests/postgres.py starts it on
127.0.0.1 and stops it afterwards); each script gets its own empty database.

    .venv/bin/python attacks/new/on_postgres.py [--checkout PATH] SCRIPT [SCRIPT ...]
    e.g. attacks/new/on_postgres.py trickle_segment refresh_race flipflop
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tests.postgres import temporary_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkout", default=str(HERE.parent.parent))
    parser.add_argument("scripts", nargs="+")
    args = parser.parse_args()
    import sqlalchemy
    with temporary_server() as server:
        if server is None:
            raise SystemExit("no PostgreSQL binaries here")
        admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
        for script in args.scripts:
            name = "dss_new_" + uuid.uuid4().hex[:10]
            with admin.connect() as connection:
                connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
            url = server.rsplit("/", 1)[0] + "/" + name
            done = subprocess.run([sys.executable, str(HERE / f"{script}.py"), "--checkout",
                                   args.checkout, "--database-url", url],
                                  capture_output=True, text=True, timeout=600)
            print(f"== {script} (PostgreSQL) rc={done.returncode}")
            out = done.stdout.strip()
            print(out.splitlines()[-1] if out else done.stderr[-1500:])
        admin.dispose()


if __name__ == "__main__":
    main()
