"""python -m edgepose"""
from edgepose.cli import main

main()
