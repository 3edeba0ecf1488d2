"""The console's words in English and Simplified Chinese. A missing zh-CN entry falls back
to English (a test keeps both tables complete)."""

from __future__ import annotations

LOCALES = ("en", "zh-CN")

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "churnwatch staff console",
        "sign_in": "Sign in",
        "sign_in_intro": "Enter the e-mail address of your staff profile: we send you a "
                         "one-time sign-in link.",
        "email": "E-mail address",
        "send_link": "Send me a sign-in link",
        "admin_sign_in": "Administrators",
        "admin_intro": "Sign in with an API key that has the admin scope.",
        "api_key": "API key",
        "dev_mode": "Development mode: no API keys are configured, so the console is open.",
        "dev_continue": "Continue as administrator",
        "link_sent": "Check your mail",
        "link_sent_body": "If {email} belongs to a member of staff, a sign-in link is on its "
                          "way. It works once, for {minutes} minutes.",
        "confirm": "Finish signing in",
        "confirm_body": "Press the button to sign in to churnwatch on this device.",
        "link_invalid": "This sign-in link is not valid any more: it was used already or it "
                        "expired. Ask for a new one.",
        "key_invalid": "That API key is unknown or lacks the admin scope.",
        "email_invalid": "Enter an e-mail address such as name@example.com.",
        "mail_down": "The sign-in mail could not be sent right now; try again in a minute.",
        "csrf": "This form expired. Reload the page and try again.",
        "sign_out": "Sign out",
        "signed_in_as": "Signed in as {name}",
        "at_risk": "Customers at risk",
        "tier": "Tier",
        "high": "high", "medium": "medium", "low": "low",
        "customer": "Customer", "score": "Score", "why": "Why", "action": "Suggested action",
        "store": "Store", "last_store": "latest visits at", "last_seen": "Last seen", "none_at_risk": "Nobody in this tier right now.",
        "next": "Next page", "first": "First page", "holdout": "holdout — do not contact",
        "language": "中文",
        "no_customer": "No customer {customer} in your stores.",
        "profile": "Profile", "contact": "Contact", "no_contact": "No contact the customer agreed to.",
        "owner": "Owner", "value_tier": "Value", "lifecycle": "Stage",
        "reasons": "Why", "score_over_time": "Score over time", "timeline": "Timeline",
        "record_action": "Record what you did", "note": "Note (optional)", "save": "Save",
        "recorded": "Recorded. It is on the timeline.",
        "action_called": "Called", "action_message_sent": "Message sent",
        "action_coupon_sent": "Coupon sent", "action_exclusive_offer": "Exclusive service offered",
        "action_complaint_resolved": "Complaint resolved", "action_other": "Other",
        "kind_tier_change": "Tier change", "kind_staff_action": "Staff action",
        "kind_notification": "Notification", "kind_activity": "Activity",
        "kind_acknowledged": "Acknowledged", "kind_profile_change": "Profile updated",
        "manager": "Manager", "managers_only": "These views are for store managers and administrators.",
        "churn_rate": "Churn rate by month", "tiers_over_time": "Customers per tier, by day",
        "tiers_now": "Now", "winback_by_action": "Win-back rate by action",
        "winback_by_staff": "Win-back rate by staff member", "download_csv": "CSV",
        "uplift": "Uplift over the holdout group", "winback_rate": "Win-back rate",
        "holdout_rate": "Holdout return rate", "no_data": "No data yet.", "filter": "Filter",
        "alerts": "Alerts", "no_alerts": "No alerts for you.", "acknowledge": "Acknowledge",
        "acknowledged": "acknowledged", "open_customer": "Open customer",
        "no_alert": "That alert is not one of yours.",
        "stage_new": "new", "stage_active": "active", "stage_at_risk": "at risk",
        "stage_won_back": "won back", "stage_dormant": "dormant", "stage_churned": "churned",
        "subject": "Your churnwatch sign-in link",
        "mail_text": "Hello {name},\n\nopen this link to sign in to churnwatch (it works once, "
                     "for {minutes} minutes):\n\n{link}\n\nIf you did not ask for it, ignore "
                     "this message.\n",
    },
    "zh-CN": {
        "title": "churnwatch 员工控制台",
        "sign_in": "登录",
        "sign_in_intro": "请输入您员工资料中的电子邮箱，我们会发送一次性登录链接。",
        "email": "电子邮箱",
        "send_link": "发送登录链接",
        "admin_sign_in": "管理员",
        "admin_intro": "使用具有 admin 权限的 API 密钥登录。",
        "api_key": "API 密钥",
        "dev_mode": "开发模式：未配置 API 密钥，控制台对所有人开放。",
        "dev_continue": "以管理员身份继续",
        "link_sent": "请查收邮件",
        "link_sent_body": "如果 {email} 属于员工，登录链接已发出。链接仅可使用一次，{minutes} 分钟内有效。",
        "confirm": "完成登录",
        "confirm_body": "点击按钮，在此设备上登录 churnwatch。",
        "link_invalid": "此登录链接已失效（已使用或已过期），请重新获取。",
        "key_invalid": "API 密钥无效或没有 admin 权限。",
        "email_invalid": "请输入有效的电子邮箱，例如 name@example.com。",
        "mail_down": "暂时无法发送登录邮件，请稍后再试。",
        "csrf": "表单已过期，请刷新页面后重试。",
        "sign_out": "退出登录",
        "signed_in_as": "当前用户：{name}",
        "at_risk": "流失风险客户",
        "tier": "风险等级",
        "high": "高", "medium": "中", "low": "低",
        "customer": "客户", "score": "评分", "why": "原因", "action": "建议行动",
        "store": "门店", "last_store": "最近到访门店", "last_seen": "最近到访", "none_at_risk": "此等级目前没有客户。",
        "next": "下一页", "first": "第一页", "holdout": "对照组——请勿联系",
        "language": "English",
        "no_customer": "您的门店中没有客户 {customer}。",
        "profile": "客户资料", "contact": "联系方式", "no_contact": "客户未同意任何联系方式。",
        "owner": "负责人", "value_tier": "价值", "lifecycle": "阶段",
        "reasons": "原因", "score_over_time": "评分变化", "timeline": "时间线",
        "record_action": "记录跟进行动", "note": "备注（可选）", "save": "保存",
        "recorded": "已记录，可在时间线中查看。",
        "action_called": "已致电", "action_message_sent": "已发消息",
        "action_coupon_sent": "已发优惠券", "action_exclusive_offer": "已提供专属服务",
        "action_complaint_resolved": "投诉已解决", "action_other": "其他",
        "kind_tier_change": "风险等级变化", "kind_staff_action": "员工行动",
        "kind_notification": "通知", "kind_activity": "消费/到店",
        "kind_acknowledged": "已确认", "kind_profile_change": "资料更新",
        "manager": "经理视图", "managers_only": "此页面仅限店长和管理员查看。",
        "churn_rate": "按月流失率", "tiers_over_time": "每日各风险等级客户数",
        "tiers_now": "当前", "winback_by_action": "各行动挽回率",
        "winback_by_staff": "各员工挽回率", "download_csv": "CSV",
        "uplift": "相对对照组的提升", "winback_rate": "挽回率",
        "holdout_rate": "对照组回访率", "no_data": "暂无数据。", "filter": "筛选",
        "alerts": "系统提示", "no_alerts": "暂无提醒。", "acknowledge": "确认",
        "acknowledged": "已确认", "open_customer": "查看客户",
        "no_alert": "这条提醒不属于您。",
        "stage_new": "新客", "stage_active": "活跃", "stage_at_risk": "有流失风险",
        "stage_won_back": "已挽回", "stage_dormant": "沉睡", "stage_churned": "已流失",
        "subject": "您的 churnwatch 登录链接",
        "mail_text": "{name}，您好：\n\n打开以下链接登录 churnwatch（仅可使用一次，{minutes} 分钟内有效）：\n\n"
                     "{link}\n\n如果不是您本人操作，请忽略此邮件。\n",
    },
}


def locale_of(value: str | None) -> str:
    if value and value.lower().startswith("zh"):
        return "zh-CN"
    return "en"


def words(locale: str) -> dict[str, str]:
    return {**TEXT["en"], **TEXT.get(locale, {})}
