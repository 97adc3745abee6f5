from videogen.cli import run

run()
