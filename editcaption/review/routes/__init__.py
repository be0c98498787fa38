"""The review app's routes, one `APIRouter` per concern; `review.app.create_app` includes them all.

`shared` holds what they have in common (the app state, the refusal type, answers and dependencies),
`errors` how refusals are answered, and `health`, `auth`, `tasks`, `images`, `admin` the routes.
"""
