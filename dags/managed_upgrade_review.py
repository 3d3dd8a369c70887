"""Review questions of the managed upgrades (Airflow DAG `managed_upgrade_review`): one run per question.

The fix-and-retest and customer sign-off tasks of the customer DAGs create these runs when they ask
the consultant something; answer them under "Required actions". Do not trigger this DAG by hand.
"""

from managed_upgrade_airflow.gates.questions import build_review_dag

dag = build_review_dag(__doc__)
