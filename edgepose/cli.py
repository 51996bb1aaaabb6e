"""The edgepose command line (placeholder until the commands land)."""
import typer

app = typer.Typer(help="edgepose: GluonCV pose models on edge runtimes.")


def main() -> None:
    app()
