"""What a build leaves for people: the published folder and manifest, the terminal summary, the HTML report."""
